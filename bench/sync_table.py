#!/usr/bin/env python3
"""Turns `shoal-bench sync --json` output into a markdown table and checks the matrix's targets.

    cargo run --release -p shoal-bench -- sync --matrix --seeds 5 --baseline-seeds 1 --json \
        > bench/results/sync-matrix.jsonl
    python3 bench/sync_table.py < bench/results/sync-matrix.jsonl

Each cell (n, d, kind) ran on several data seeds; the table shows, per strategy, the worst seed
(the most metadata bytes; the most round trips and CPU over all seeds), and every seed is
checked against the targets (the baselines, run on the first seed only with
`--baseline-seeds 1`, are compared on that seed). `lb` is the information-theoretic minimum for 256-bit ids, `lb64`
for the 64-bit ids the protocol reconciles.
"""
import collections
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.startswith("{")]
cells = collections.OrderedDict()
for r in rows:
    cells.setdefault((r["n"], r["d"], r["diff"]), {}).setdefault(r["strategy"], []).append(r)


def worst(runs):
    if not runs:
        return None
    w = dict(max(runs, key=lambda r: r["meta_bytes"]))
    w["round_trips"] = max(r["round_trips"] for r in runs)
    w["cpu_ms"] = max(max(r["cpu_ms_a"], r["cpu_ms_b"]) for r in runs)
    w["seeds"] = len(runs)
    return w


print(
    "| n | d | diff | seeds | shoal meta B (worst) | ×LB | ×LB64 | wire B | rt | cpu ms/side (max) "
    "| negentropy meta B | rt | seed meta B | rt |"
)
print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
failures = []
for (n, d, diff), s in cells.items():
    sh, ng, sd = worst(s.get("shoal", [])), worst(s.get("negentropy", [])), worst(s.get("seed", []))
    if sh is None:
        continue
    lb, lb64 = sh["lb_bytes"], sh.get("lb64_bytes", 0)
    ratio = sh["meta_bytes"] / lb if lb else 0.0
    ratio64 = sh["meta_bytes"] / lb64 if lb64 else 0.0
    col = lambda r, f: "" if r is None else f"{r[f]:,}"
    print(
        f"| {n:,} | {d:,} | {diff} | {sh['seeds']} | {sh['meta_bytes']:,} | {ratio:.2f} | {ratio64:.2f} "
        f"| {sh.get('wire_bytes', 0):,} | {sh['round_trips']} | {sh['cpu_ms']:.1f} "
        f"| {col(ng, 'meta_bytes')} | {col(ng, 'round_trips')} | {col(sd, 'meta_bytes')} "
        f"| {col(sd, 'round_trips')} |"
    )
    for run in s["shoal"]:
        key = f"n={n} d={d} {diff} seed={run.get('seed', '?')}"
        r = run["meta_bytes"] / lb if lb else 0.0
        if 1 <= d <= 1000 and r > 3:
            failures.append(f"{key}: meta {r:.2f}x LB > 3")
        if d <= 1000 and run["round_trips"] > 3:
            failures.append(f"{key}: {run['round_trips']} round trips")
        if d == 0 and (run["round_trips"] != 1 or run["meta_bytes"] > 64):
            failures.append(f"{key}: d=0 must be 1 round trip and <= 64 bytes")
        if not run["converged"] or run["overfetched_items"]:
            failures.append(
                f"{key}: converged={run['converged']} overfetched={run['overfetched_items']}"
            )
        same_seed = [g for g in s.get("negentropy", []) if g.get("seed") == run.get("seed")]
        if same_seed and run["meta_bytes"] > same_seed[0]["meta_bytes"]:
            failures.append(f"{key}: meta above negentropy's")
        if d * 10 == n:
            # d = 10%: at most 1.1 x the bytes of all (key, 32-byte hash) pairs of one side;
            # keys are 32-byte partition hashes + 16-byte sort keys in the benchmark.
            if run["meta_bytes"] > 1.1 * n * (48 + 32):
                failures.append(f"{key}: meta above 1.1 x all (key, hash) pairs")
print()
print("targets:", "all met" if not failures else "; ".join(failures))
