"""HTTP limits through the mount: bounded retries and waits, Retry-After, a PUT resent
on a fresh connection, decoded-size and in-flight memory caps, the stream deadline,
timeouts, and a prompt exit with requests in flight.

Behaviours the emulator lacks (a Retry-After header, a connection dropped after reading a
PUT, gzip bodies, a dripping or silent server) come from ``Proxy``: a small HTTP/1.1 server
in this process between dssfs and the emulator, forwarding what no rule of the test takes.
Request counts are exact; times are only upper bounds (what the README documents, plus a
margin for the process and FUSE round trips), and lower bounds where dssfs must wait.
"""

from __future__ import annotations

import errno
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
import zlib

import pytest

from dssfs_harness import (assert_errno, clean_env, dssfs_sanitized, in_thread, is_mounted,
                           read_bytes, run_dssfs, unmount, vm_hwm_kib)

SCHEMA = ("SALES", "datasets", "orders", "schema.json")
SCHEMA_API = "/public/api/projects/SALES/datasets/orders/schema"
SCHEMA_RE = r"^/projects/SALES/datasets/orders/schema$"
DOC_RE = r"^/public/api/projects/[^/]+/datasets/[^/]+(/.*)?$"     # a dataset's documents
MARGIN = 1.0   # seconds beyond a documented bound: process start-up, FUSE round trips


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


def reply(h, status, body=b"", headers=()):
    h.send_response(status)
    for k, v in headers:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)
    return True


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


# --- retries: bounded count and time --------------------------------------------------------

def capped_waits(retries):
    """The most dssfs may wait between attempts without Retry-After (README, `retries`)."""
    return sum(min(0.1 * 2 ** n, 2.0) for n in range(retries))


@pytest.mark.expect_dssfs_errors
def test_an_always_unavailable_dss_fails_within_the_documented_bound(emulator, mount_factory):
    retries, timeout = 6, 1
    m = mount_factory(emulator, options=["retries=%d" % retries, "timeout=%d" % timeout,
                                         "prefetch=0"])
    os.listdir(m.path("SALES", "datasets"))
    emulator.add_fault(path_regex=SCHEMA_RE, status=503, message="maintenance",
                       delay_ms=300)
    emulator.reset_stats()
    t0 = time.monotonic()
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    elapsed = time.monotonic() - t0
    bound = (retries + 1) * timeout + capped_waits(retries)       # 7 + 5.1 s
    assert elapsed <= bound + MARGIN, "%.1f s > %.1f s" % (elapsed, bound)
    assert emulator.log_lines() == ["GET " + SCHEMA_API] * (retries + 1)


@pytest.mark.parametrize("value", ["11", "100"])
def test_retries_beyond_the_cap_are_refused(tmp_path, home, emulator, value):
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": emulator.admin_key})
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    rc, out, err = run_dssfs(["-f", "-o", "retries=" + value, mp], env, mountpoint=mp)
    assert rc == 1 and "invalid option value: retries=%s (0 to 10)" % value in err
    assert not is_mounted(mp)


def test_the_largest_retries_value_is_accepted(emulator, mount_factory):
    m = mount_factory(emulator, options=["retries=10"])
    assert read_bytes(m.path(*SCHEMA))


def schema_refused(status, retry_after, times=None):
    """A rule: GETs of the schema are answered `status` with this Retry-After (the first
    `times` of them, or all); everything else passes."""
    left = [times]

    def rule(h, body):
        if h.command != "GET" or h.path != SCHEMA_API or left[0] == 0:
            return False
        if left[0] is not None:
            left[0] -= 1
        return reply(h, status, b"busy", [("Retry-After", retry_after)])
    return rule


def mount_schema_via(mount_factory, emu, proxy, options):
    """Mounts through proxy; the schema's folder is listed, so a read of it needs
    exactly one request."""
    m = mount_via(mount_factory, emu, proxy, list(options) + ["prefetch=0"])
    os.listdir(m.path("SALES", "datasets"))
    return m


@pytest.mark.expect_dssfs_errors
def test_retry_after_is_honoured_between_attempts(emulator, mount_factory, proxy_factory):
    p = proxy_factory(schema_refused(503, "2"))
    m = mount_schema_via(mount_factory, emulator, p, ["retries=2"])
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    times = p.requests("GET", SCHEMA_API)
    assert len(times) == 3
    for a, b in zip(times, times[1:]):
        assert 2.0 <= b - a <= 2.0 + MARGIN + 1.0, "waited %.2f s, Retry-After: 2" % (b - a)


@pytest.mark.expect_dssfs_errors
def test_retry_after_beyond_the_cap_ends_the_retries(emulator, mount_factory, proxy_factory):
    p = proxy_factory(schema_refused(503, "3600"))
    m = mount_schema_via(mount_factory, emulator, p, ["retries=3"])
    t0 = time.monotonic()
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    assert time.monotonic() - t0 < 5.0
    assert len(p.requests("GET", SCHEMA_API)) == 1
    assert "not retrying" in m.stderr_text()


def test_a_429_is_retried_after_its_retry_after(emulator, mount_factory, proxy_factory):
    p = proxy_factory(schema_refused(429, "1", times=1))
    m = mount_schema_via(mount_factory, emulator, p, [])
    emulator.reset_stats()
    assert json.loads(read_bytes(m.path(*SCHEMA)))["columns"]
    times = p.requests("GET", SCHEMA_API)
    assert len(times) == 2 and times[1] - times[0] >= 1.0
    assert emulator.log_lines() == ["GET " + SCHEMA_API]


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


# --- memory: decoded sizes and responses in flight ------------------------------------------

PAD_START = b'{"columns": [], "pad": "'
BOMB_FIRST = 15 << 20          # decoded bytes of the first part
BOMB_TOTAL = 300 * 10 ** 6     # decoded bytes in all
_bomb = {}


def gzip_bomb():
    """(first, rest): a gzip body of BOMB_TOTAL decoded bytes (~300 KB), cut where the
    first part decodes to BOMB_FIRST bytes, under a 16 MiB max_response."""
    if not _bomb:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        first = c.compress(PAD_START + b"x" * (BOMB_FIRST - len(PAD_START)))
        first += c.flush(zlib.Z_SYNC_FLUSH)
        rest = []
        chunk = b"x" * (1 << 20)
        left = BOMB_TOTAL - BOMB_FIRST - 2
        while left > 0:
            rest.append(c.compress(chunk[:min(left, len(chunk))]))
            left -= len(chunk)
        rest.append(c.compress(b'"}') + c.flush())
        _bomb["parts"] = (first, b"".join(rest))
    return _bomb["parts"]


def bomb_rule(proxy):
    """Dataset documents come as gzip bombs: the first 15 MiB decoded at once, the rest
    one second later, so that concurrent fetches hold their buffers at the same time."""
    first, rest = gzip_bomb()

    def rule(h, body):
        if h.command != "GET" or not re.match(DOC_RE, h.path):
            return False
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(first) + len(rest)))
        h.end_headers()
        h.wfile.write(first)
        h.wfile.flush()
        proxy.stopping.wait(1.0)
        for i in range(0, len(rest), 16384):
            h.wfile.write(rest[i:i + 16384])
        return True
    return rule






@pytest.mark.expect_dssfs_errors
def test_a_gzip_body_is_capped_by_its_decoded_size(emulator, mount_factory, proxy_factory):
    p = proxy_factory()
    p.rule = bomb_rule(p)
    m = mount_schema_via(mount_factory, emulator, p, ["max_response=16"])
    r = subprocess.run(["cat", m.path(*SCHEMA)], capture_output=True, timeout=60)
    assert r.returncode != 0 and r.stdout == b""
    assert "File too large" in r.stderr.decode()
    assert "response larger than %d bytes" % (16 << 20) in m.stderr_text()
    assert p.count("GET", DOC_RE) == 1
    if not dssfs_sanitized():
        assert vm_hwm_kib(m.proc.pid) < 100 << 10


@pytest.mark.expect_dssfs_errors
def test_concurrent_gzip_bombs_stay_within_the_inflight_bound(emulator_factory, mount_factory,
                                                              proxy_factory):
    emu = emulator_factory(args=["--generate", "1,8"])
    p = proxy_factory(emu=emu)
    p.rule = bomb_rule(p)
    m = mount_via(mount_factory, emu, p, ["max_response=16"])   # prefetch: 16 threads
    assert len(os.listdir(m.path("GEN001", "datasets"))) == 8
    # the prefetch threads fetch the 8 x 5 dataset documents; wait until they are done
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = p.count("GET", DOC_RE)
        time.sleep(1.5)
        if n >= 16 and n == p.count("GET", DOC_RE) and p.done == len(p.log):
            break
    assert p.count("GET", DOC_RE) >= 16
    text = m.stderr_text()
    assert m.proc.poll() is None and "out of memory" not in text
    r = subprocess.run(["cat", m.path("GEN001", "datasets", "ds_000", "schema.json")],
                       capture_output=True, timeout=60)
    assert r.returncode != 0 and "File too large" in r.stderr.decode()
    if not dssfs_sanitized():
        # max_inflight defaults to max(2 x 16, 64) MiB (measured: 74 MiB in all); without
        # it, 16 buffers of 16 MiB (measured: 269 MiB)
        hwm = vm_hwm_kib(m.proc.pid)
        assert hwm < 128 << 10, "dssfs peaked at %d MiB" % (hwm >> 10)
    assert read_bytes(m.path("GEN001", "metadata.json"))


def test_max_inflight_below_twice_max_response_is_refused(tmp_path, home, emulator):
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": emulator.admin_key})
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    rc, out, err = run_dssfs(["-f", "-o", "max_response=16,max_inflight=31", mp], env,
                             mountpoint=mp)
    assert rc == 1 and "max_inflight at least twice max_response" in err


# --- deadlines --------------------------------------------------------------------------------

EXPORT_API = "/public/api/projects/SALES/export"


def drip_export_rule(proxy):
    """The export answers 200 and then 2 bytes every 0.5 s: never a stall, never done."""
    def rule(h, body):
        if h.command == "POST" and h.path == EXPORT_API:
            h.send_response(200)
            h.send_header("Content-Type", "application/zip")
            h.send_header("Content-Length", str(10 ** 7))
            h.end_headers()
            while not proxy.stopping.wait(0.5):
                h.wfile.write(b"PK")
                h.wfile.flush()
            return True
        return False
    return rule


@pytest.mark.expect_dssfs_errors
def test_a_dripping_export_ends_at_stream_timeout(emulator, mount_factory, proxy_factory):
    p = proxy_factory()
    p.rule = drip_export_rule(p)
    m = mount_via(mount_factory, emulator, p, ["timeout=2", "stream_timeout=3", "prefetch=0"])
    t0 = time.monotonic()
    assert_errno(in_thread(os.stat, m.path("SALES", "export.zip")), errno.ETIMEDOUT)
    assert time.monotonic() - t0 <= 3 + MARGIN
    assert len(p.requests("POST", EXPORT_API)) == 1


@pytest.mark.expect_dssfs_errors
def test_a_signal_ends_a_stat_of_a_dripping_export(emulator, mount_factory, proxy_factory):
    """`stat` of export.zip waits inside LOOKUP while DSS drips the export; Ctrl-C (SIGINT)
    ends it at once, though the stream would go on for stream_timeout (issue 7, 3.3: it was
    unkillable for the whole stream)."""
    p = proxy_factory()
    p.rule = drip_export_rule(p)
    m = mount_via(mount_factory, emulator, p, ["timeout=2", "stream_timeout=30", "prefetch=0"])
    os.listdir(m.path("SALES"))
    proc = subprocess.Popen(["stat", m.path("SALES", "export.zip")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not p.requests("POST", EXPORT_API) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.requests("POST", EXPORT_API), "the export was never asked for"
        time.sleep(0.5)
        assert proc.poll() is None  # still streaming
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30 + MARGIN)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert took <= MARGIN, "stat took %.1f s to end after SIGINT" % took


@pytest.mark.expect_dssfs_errors
def test_a_dripping_export_does_not_hold_its_siblings(emulator, mount_factory, proxy_factory):
    """While a `stat` of export.zip waits on DSS (inside LOOKUP), a sibling's lookup in the
    same folder runs beside it: libfuse 3.14 never grants the kernel parallel directory
    operations, so dssfs adds the flag to INIT's reply (fuseio.c).  Before: 7 s, the
    whole export stream."""
    p = proxy_factory()
    p.rule = drip_export_rule(p)
    m = mount_via(mount_factory, emulator, p, ["timeout=2", "stream_timeout=8", "prefetch=0"])
    names = os.listdir(m.path("SALES"))
    assert "variables.json" in names and "datasets" in names
    result = {}
    export = threading.Thread(target=lambda: result.update(
        r=in_thread(os.stat, m.path("SALES", "export.zip"))))
    export.start()
    try:
        deadline = time.monotonic() + 5
        while not p.requests("POST", EXPORT_API) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.requests("POST", EXPORT_API)
        time.sleep(0.5)                     # the export's LOOKUP is in dssfs
        t0 = time.monotonic()
        assert os.stat(m.path("SALES", "variables.json")).st_size > 0
        assert os.listdir(m.path("SALES", "datasets"))
        took = time.monotonic() - t0
        assert took < 3.0, "the siblings took %.1f s" % took
    finally:
        export.join(timeout=60)
    assert_errno(result["r"], errno.ETIMEDOUT)


def stall_rule(proxy, regex):
    def rule(h, body):
        if h.command == "GET" and re.match(regex, h.path):
            proxy.stopping.wait(120)     # never answers while the test runs
            return True
        return False
    return rule


@pytest.mark.expect_dssfs_errors
def test_a_silent_server_makes_a_read_fail_within_timeout(emulator, mount_factory,
                                                          proxy_factory):
    p = proxy_factory()
    p.rule = stall_rule(p, "^" + SCHEMA_API + "$")
    m = mount_schema_via(mount_factory, emulator, p, ["timeout=2"])
    t0 = time.monotonic()
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.ETIMEDOUT)
    assert time.monotonic() - t0 <= 2 + MARGIN
    assert len(p.requests("GET", SCHEMA_API)) == 1      # a timeout is not retried


def wait_for(cond, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


@pytest.mark.parametrize("how", ["unmount", "sigterm"])
def test_exit_is_prompt_while_prefetch_requests_hang(emulator, mount_factory, proxy_factory,
                                                     how):
    """Prefetch threads sit in requests to a server that never answers (timeout 30 s);
    unmounting or SIGTERM must not wait for them."""
    p = proxy_factory()
    p.rule = stall_rule(p, DOC_RE)
    m = mount_via(mount_factory, emulator, p, ["timeout=30"])
    os.listdir(m.path("SALES", "datasets"))
    wait_for(lambda: p.count("GET", DOC_RE) >= 2, "prefetch requests")
    t0 = time.monotonic()
    if how == "unmount":
        assert unmount(m.mnt) == []
    else:
        os.kill(m.proc.pid, signal.SIGTERM)
    assert m.proc.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 5.0
    assert not is_mounted(m.mnt)
