"""HTTP behaviours through the mount: a save resent on a fresh connection.

Behaviours the emulator lacks (a connection dropped after reading a PUT) come from
``Proxy``: a small HTTP/1.1 server in this process between dssfs and the emulator,
forwarding what no rule of the test takes.  Request counts are exact.
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import threading
import time

import pytest

from dssfs_harness import read_bytes

SCHEMA = ("SALES", "datasets", "orders", "schema.json")
SCHEMA_API = "/public/api/projects/SALES/datasets/orders/schema"
SCHEMA_RE = r"^/projects/SALES/datasets/orders/schema$"


class Proxy:
    """An HTTP/1.1 server on 127.0.0.1 between dssfs and the emulator.

    ``rule(handler, body)`` is called for each request: it answers (or drops) it itself
    and returns True, or returns False to let the request through to the emulator.
    ``log`` holds (monotonic time, method, path) per request, in arrival order."""

    def __init__(self, emu, rule=None):
        self.emu = emu
        self.rule = rule or (lambda h, body: False)
        self.log = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.done = 0            # requests whose handling has finished
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                self.served = 0     # requests handled on this connection before this one

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with proxy.lock:
                    proxy.log.append((time.monotonic(), self.command, self.path))
                try:
                    if not proxy.rule(self, body):
                        proxy.forward(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    self.served += 1
                    with proxy.lock:
                        proxy.done += 1

            do_GET = do_PUT = do_POST = do_DELETE = handle_any

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass    # dssfs closing connections (cancelled or refused transfers)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def forward(self, h, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items()
                       if k.lower() in ("authorization", "content-type", "accept")}
            conn.request(h.command, h.path, body=body if body else None, headers=headers)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        h.send_response(r.status)
        if r.getheader("Content-Type"):
            h.send_header("Content-Type", r.getheader("Content-Type"))
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def requests(self, method, path):
        with self.lock:
            return [t for t, m, p in self.log if m == method and p == path]

    def count(self, method=None, path_regex=None):
        with self.lock:
            return sum(1 for _, m, p in self.log
                       if (method is None or m == method)
                       and (path_regex is None or re.search(path_regex, p)))

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_factory(emulator):
    started = []

    def make(rule=None, emu=None):
        p = Proxy(emu or emulator, rule)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def mount_via(mount_factory, emu, proxy, options=()):
    return mount_factory(emu, options=list(options), env={"DKU_DSS_URL": proxy.url})


# --- a save whose kept-alive connection was dropped -----------------------------------------

def edit_schema(m):
    """Reads schema.json through the mount, saves it with one more column."""
    p = m.path(*SCHEMA)
    doc = json.loads(read_bytes(p))
    doc["columns"].append({"name": "added_by_test", "type": "string"})
    with open(p, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    return doc


def drop_first_reused_put(state):
    """Reads the first PUT that comes on an already used connection, then closes that
    connection without an answer (a server or proxy closing an idle keep-alive
    connection just as the request arrives)."""
    def rule(h, body):
        if h.command == "PUT" and h.served > 0 and not state.get("dropped"):
            state["dropped"] = True
            h.close_connection = True
            return True
        return False
    return rule


def test_a_save_on_a_dropped_keepalive_connection_succeeds_once(emulator, mount_factory,
                                                                proxy_factory):
    state = {}
    p = proxy_factory()
    p.rule = drop_first_reused_put(state)
    m = mount_via(mount_factory, emulator, p, ["prefetch=0"])
    emulator.reset_stats()
    doc = edit_schema(m)     # close() returns DSS's verdict: raises on failure
    puts = [ln for ln in emulator.log_lines() if ln.startswith("PUT ")]
    assert puts == ["PUT " + SCHEMA_API]
    assert state["dropped"] and len(p.requests("PUT", SCHEMA_API)) == 2
    assert emulator.api_get("projects/SALES/datasets/orders/schema") == doc
    assert json.loads(read_bytes(m.path(*SCHEMA))) == doc


