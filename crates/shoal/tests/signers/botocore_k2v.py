"""Sends K2V requests signed by botocore's SigV4Auth (an independent SigV4 signer).

Reads from standard input a JSON object {"endpoint", "key", "secret", "region", "requests": [
{"method", "target", "body" (text), "sign_target" (optional: the target to sign, to forge a
tampered request)}]} and prints a JSON list of {"status", "body"} in the same order. The target
(path and query, already percent-encoded) is sent exactly as given."""

import http.client
import json
import sys
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main():
    job = json.load(sys.stdin)
    creds = Credentials(job["key"], job["secret"])
    host = urlsplit(job["endpoint"]).netloc
    out = []
    for r in job["requests"]:
        body = r.get("body", "").encode()
        signed_target = r.get("sign_target", r["target"])
        req = AWSRequest(method=r["method"], url=job["endpoint"] + signed_target, data=body)
        SigV4Auth(creds, "k2v", job["region"]).add_auth(req)
        headers = {k: v for k, v in req.headers.items()}
        conn = http.client.HTTPConnection(host, timeout=60)
        conn.request(r["method"], r["target"], body=body, headers=headers)
        resp = conn.getresponse()
        out.append({"status": resp.status, "body": resp.read().decode("utf-8", "replace")})
        conn.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
