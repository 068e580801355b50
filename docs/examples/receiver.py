"""A webhook receiver for switchhook, in Python's standard library and the official Standard
Webhooks library: it verifies each request's signature and acts on each `webhook-id` once.

switchhook delivers at least once: after a lost answer, a retry, or a `deliveries resend`,
the same webhook arrives again with the same `webhook-id`. Keep the ids you have acted on
(here in SQLite, so a restart does not forget them) and answer a repeat with 2xx without
acting again.

    python3 -m pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python3 receiver.py 8080

It prints one JSON line per request: the webhook id, its trigger and call, and whether it
was new.
"""

import json
import os
import sqlite3
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen = sqlite3.connect(os.environ.get("SEEN_DB", "seen.db"), check_same_thread=False)
seen.execute("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY)")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        self.handle_webhook(body, body)

    do_PUT = do_POST

    def do_GET(self):
        # A GET carries its data in the query string, and that is what is signed.
        query = urlsplit(self.path).query
        self.handle_webhook(query, None)

    def handle_webhook(self, signed, body):
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            webhook.verify(signed, headers, json_parse=False)
        except WebhookVerificationError as e:
            self.send_response(401)
            self.end_headers()
            print(json.dumps({"rejected": str(e)}), flush=True)
            return
        msg_id = headers["webhook-id"]
        with seen:
            new = seen.execute("INSERT OR IGNORE INTO seen (id) VALUES (?)", (msg_id,)).rowcount == 1
        payload = json.loads(body) if body and body.startswith("{") else {}
        if new:
            pass  # act here: open a ticket, update the CRM, ...
        print(json.dumps({
            "webhook_id": msg_id,
            "trigger": payload.get("trigger"),
            "call": payload.get("cdr", {}).get("id"),
            "new": new,
        }), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
