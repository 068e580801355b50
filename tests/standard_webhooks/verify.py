"""Verifies requests switchhook sent with the official Standard Webhooks library (PyPI
`standardwebhooks`), as a receiver would: the body is the payload, and for a GET request the
query string (what follows `?`). Reads a JSON list of
{"secret", "method", "uri", "headers", "body"}; prints one line per request and exits 1 if
any fails to verify."""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

failed = 0
requests = json.load(open(sys.argv[1]))
for r in requests:
    payload = r["uri"].split("?", 1)[1] if r["method"] == "GET" else r["body"]
    try:
        Webhook(r["secret"]).verify(payload, r["headers"], json_parse=False)
        print("ok", r["method"], r["uri"].split("?")[0], r["headers"]["webhook-id"])
    except WebhookVerificationError as e:
        failed += 1
        print("FAILED", r["method"], r["uri"], e)
print(f"{len(requests) - failed} of {len(requests)} verified")
sys.exit(1 if failed or not requests else 0)
