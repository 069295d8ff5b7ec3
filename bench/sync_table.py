#!/usr/bin/env python3
"""Turns `shoal-bench sync --json` output into a markdown table and checks issue #3's targets.

    cargo run --release -p shoal-bench -- sync --n 10000,100000,1000000 \
        --d 0,1,10,100,1000,1%,10% --diff one-sided,two-sided,modified --json \
        | python3 bench/sync_table.py
"""
import collections
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.startswith("{")]
cells = collections.OrderedDict()
for r in rows:
    cells.setdefault((r["n"], r["d"], r["diff"]), {})[r["strategy"]] = r

print("| n | d | diff | shoal meta B | ×LB | rt | negentropy meta B | rt | seed meta B | rt | shoal cpu ms (a/b) |")
print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
failures = []
for (n, d, diff), s in cells.items():
    sh, ng, sd = s.get("shoal"), s.get("negentropy"), s.get("seed")
    if sh is None:
        continue
    lb = sh["lb_bytes"]
    ratio = sh["meta_bytes"] / lb if lb else 0.0
    col = lambda r, f: "" if r is None else f"{r[f]:,}"
    print(
        f"| {n:,} | {d:,} | {diff} | {sh['meta_bytes']:,} | {ratio:.2f} | {sh['round_trips']} "
        f"| {col(ng, 'meta_bytes')} | {col(ng, 'round_trips')} | {col(sd, 'meta_bytes')} "
        f"| {col(sd, 'round_trips')} | {sh['cpu_ms_a']:.0f}/{sh['cpu_ms_b']:.0f} |"
    )
    key = f"n={n} d={d} {diff}"
    if 1 <= d <= 1000 and ratio > 3:
        failures.append(f"{key}: meta {ratio:.2f}x LB > 3")
    if ng is not None and sh["meta_bytes"] > ng["meta_bytes"]:
        failures.append(f"{key}: meta above negentropy's")
    if d <= 1000 and sh["round_trips"] > 3:
        failures.append(f"{key}: {sh['round_trips']} round trips")
    if d == 0 and (sh["round_trips"] != 1 or sh["meta_bytes"] > 64):
        failures.append(f"{key}: d=0 must be 1 round trip and <= 64 bytes")
    if not sh["converged"] or sh["overfetched_items"]:
        failures.append(f"{key}: converged={sh['converged']} overfetched={sh['overfetched_items']}")
    if d * 10 == n:
        # d = 10%: at most 1.1 x the bytes of all (key, 32-byte hash) pairs of one side; keys
        # are 32-byte partition hashes + 16-byte sort keys in the benchmark.
        bound = 1.1 * n * (48 + 32)
        if sh["meta_bytes"] > bound:
            failures.append(f"{key}: meta above 1.1 x all (key, hash) pairs")
print()
print("targets:", "all met" if not failures else "; ".join(failures))
