"""A merchant's webhook receiver: verifies each delivery with the Standard Webhooks library
(`pip install standardwebhooks`) and prints its id and type, one line each, to stdout.

Usage: webhook_receiver.py SECRET_FILE PORT_FILE — listens on a free port of 127.0.0.1, writes it
to PORT_FILE, and reads the endpoint's secret (`whsec_…`) from SECRET_FILE when a delivery comes.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

secret_file, port_file = sys.argv[1], sys.argv[2]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            with open(secret_file) as f:
                wh = Webhook(f.read().strip())
            event = wh.verify(body, dict(self.headers))  # raises on a bad or stale signature
        except Exception as e:  # noqa: BLE001 - any failure to verify is a refusal
            print("refused:", e, flush=True)
            self.send_response(400)
            self.end_headers()
            return
        print(self.headers["webhook-id"], event["type"], json.dumps(event["data"], ensure_ascii=False), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Receiver)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
