#!/usr/bin/env python3
"""A small fake cloud API on loopback that counts what it is asked to do.

    fakecloud.py PORT_FILE [--fail-first KIND]

POST /KIND (vpcs, tags, droplets, load_balancers) creates a resource and
answers its id as plain text ("vpc-1"); GET /stats answers the counts as
JSON.  With --fail-first KIND, the first POST of that kind answers 500 and
creates nothing (the outage of the first run).  It listens on 127.0.0.1,
on a port of its own choosing, written to PORT_FILE.
"""
import http.server
import json
import sys
import threading

lock = threading.Lock()
posts = 0
created = {}
fail_first = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--fail-first" else None
PREFIX = {"vpcs": "vpc", "tags": "tag", "droplets": "droplet", "load_balancers": "lb"}


class Api(http.server.BaseHTTPRequestHandler):
    def answer(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        global posts, fail_first
        kind = self.path.strip("/")
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            posts += 1
            if kind not in PREFIX:
                return self.answer(404, "no such kind\n")
            if kind == fail_first:
                fail_first = None
                return self.answer(500, "internal error\n")
            created[kind] = created.get(kind, 0) + 1
            rid = "%s-%d" % (PREFIX[kind], created[kind])
        self.answer(201, rid)

    def do_GET(self):
        with lock:
            stats = {"posts": posts, "created": sum(created.values()), "by_kind": created}
        self.answer(200, json.dumps(stats) + "\n")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
