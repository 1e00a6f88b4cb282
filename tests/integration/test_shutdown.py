"""Interrupts and exit with work in flight (issue 7, items 3.3 and 3.5), through the mount.

- A process waiting for *another* process's fetch of the same document (the cache makes
  them share one GET) is interrupted by its own signal at once; the fetch goes on and
  answers the first process, and is cached.
- SIGTERM while a user's read waits on a stalled server: dssfs cancels the read and
  exits promptly; the reader gets an error, not a hang.
- A signal to a writer while its close() saves, or SIGTERM while a save is in flight
  (slow server): the save completes, exactly one PUT lands, close() returns 0.  A save
  is never cut.
- SIGHUP and SIGTERM together, with a read stalled: still a prompt, clean exit.
- The kernel aborting the connection with a read stalled: a prompt exit too.

Times are only bounded from above, generously ("does not hang"); request counts are exact.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time

import pytest

from dssfs_harness import HANG_GUARD, assert_errno, in_thread, is_mounted, read_bytes, unmount

SCHEMA = ("SALES", "datasets", "orders", "schema.json")
SCHEMA_EP = "projects/SALES/datasets/orders/schema"
SCHEMA_GET = "GET /public/api/" + SCHEMA_EP
SCHEMA_RE = r"^/projects/SALES/datasets/orders/schema$"
PAYLOAD = ("SALES", "recipes", "compute_orders_enriched", "payload.py")
RECIPE_EP = "projects/SALES/recipes/compute_orders_enriched"


def wait_for(cond, what, timeout=HANG_GUARD):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def rules_left(emu):
    return emu.control("GET", "faults")


def cat(path):
    return subprocess.Popen(["cat", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def reap(*procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


# --- 3.3: a process waiting for another's fetch is interruptible ---------------------------

def test_a_signal_ends_a_wait_for_another_process_fetch(emulator, mount_factory):
    """A's `cat` fetches schema.json (DSS answers after 8 s); B's `cat` of the same file
    waits for that fetch; SIGINT to B ends B at once while A still waits; then A gets the
    right bytes, from the one GET, and the document is cached."""
    emu = emulator
    # attr_timeout: the kernel keeps the name, so both cats reach dssfs without a
    # LOOKUP, and B waits on A's fetch in dssfs, not on A's lookup in the kernel.
    m = mount_factory(emu, options=["timeout=30", "retries=0", "prefetch=0",
                                    "attr_timeout=300"])
    path = m.path(*SCHEMA)
    expected = read_bytes(path)
    m.sighup()                       # dssfs forgets the document, the kernel its attributes
    emu.add_fault(path_regex=SCHEMA_RE, delay_ms=8000, count=1)
    emu.reset_stats()
    a = cat(path)
    b = None
    try:
        wait_for(lambda: rules_left(emu) == [], "A's GET to reach the emulator")
        b = cat(path)
        time.sleep(0.5)              # B is waiting (for A's fetch: no second GET below)
        assert b.poll() is None and a.poll() is None
        t0 = time.monotonic()
        b.send_signal(signal.SIGINT)
        b.wait(timeout=HANG_GUARD)
        took = time.monotonic() - t0
        assert took < 3.0, "B took %.1f s to die of SIGINT" % took
        assert a.poll() is None, "A should still wait for DSS"
        out, err = a.communicate(timeout=HANG_GUARD)
        assert a.returncode == 0, err
        assert out == expected
    finally:
        reap(a, *([b] if b else []))
    # one GET of the document (B did not fetch it again); SIGHUP also made dssfs
    # forget the listings above it, fetched again once
    assert [ln for ln in emu.log_lines() if ln == SCHEMA_GET] == [SCHEMA_GET]
    emu.reset_stats()
    assert read_bytes(path) == expected          # cached: no GET at all
    assert emu.log_lines() == []


# --- 2.3: signals arrive while requests run -----------------------------------------------

def test_a_storm_of_sighup_and_sigusr1_disturbs_no_operation(emulator, mount_factory):
    """300 SIGHUPs and SIGUSR1s land on dssfs while four processes read every file of
    a project again and again: every read returns the right bytes, and dssfs drops its
    caches and logs its figures without an error (the handlers only set atomic flags
    and keep errno; the TSan stage runs this too)."""
    emu = emulator
    m = mount_factory(emu)
    files = []
    for root, _, names in os.walk(m.path("SALES", "datasets")):
        files += [os.path.join(root, n) for n in names]
    want = {f: read_bytes(f) for f in files}
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            for f in files:
                try:
                    if read_bytes(f) != want[f]:
                        bad.append(f)
                except OSError as e:
                    bad.append("%s: %s" % (f, e))

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for i in range(300):
            os.kill(m.proc.pid, signal.SIGHUP if i % 2 else signal.SIGUSR1)
            time.sleep(0.005)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=HANG_GUARD)
    assert bad == []
    m.sighup()
    assert "stats: {" in m.stderr_text()


# --- 3.5: exit with work in flight ---------------------------------------------------------

def sigterm_and_wait(m):
    m.check_exit_status = False
    t0 = time.monotonic()
    os.kill(m.proc.pid, signal.SIGTERM)
    rc = m.proc.wait(timeout=HANG_GUARD)
    return rc, time.monotonic() - t0


def test_sigterm_is_prompt_with_a_read_stalled_on_the_server(emulator, mount_factory):
    """`cat` waits on a GET that DSS never answers (timeout 30 s): SIGTERM ends dssfs in
    a few seconds, unmounted, and cat gets an error instead of hanging."""
    emu = emulator
    m = mount_factory(emu, options=["timeout=30", "retries=0", "prefetch=0"])
    os.listdir(m.path("SALES", "datasets", "orders"))     # only the schema GET is left
    emu.add_fault(path_regex=SCHEMA_RE, fault="stall", stall_s=120)
    emu.reset_stats()
    reader = cat(m.path(*SCHEMA))
    try:
        wait_for(lambda: emu.fault_stats().get("stall") == 1, "the stalled GET")
        rc, took = sigterm_and_wait(m)
        assert rc == 0
        # without cancelling it: the whole timeout (30 s)
        assert took < 10.0, "dssfs took %.1f s to exit" % took
        assert not is_mounted(m.mnt)
        out, err = reader.communicate(timeout=HANG_GUARD)
        assert reader.returncode != 0 and out == b""
        assert os.strerror(errno.ECANCELED) in err.decode(), err
    finally:
        reap(reader)
    assert emu.log_lines() == [SCHEMA_GET]


CONNECTIONS = "/sys/fs/fuse/connections"


def abort_file(m, request):
    """The fusectl file that aborts m's connection (mounting fusectl if needed)."""
    abort = CONNECTIONS + "/%d/abort" % os.minor(os.stat(m.mnt).st_dev)
    if not os.path.exists(abort):       # fusectl is not mounted on every machine
        subprocess.run(["mount", "-t", "fusectl", "fusectl", CONNECTIONS],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        request.addfinalizer(lambda: subprocess.run(["umount", CONNECTIONS],
                                                    stderr=subprocess.DEVNULL))
    if not os.path.exists(abort):
        pytest.skip("needs the fusectl filesystem at %s (as root)" % CONNECTIONS)
    return abort


def test_an_aborted_connection_saves_what_open_files_hold(emulator, mount_factory, request):
    """An editor has written a file and not closed it when the kernel ends the session
    (an abort, what an admin does to a hung mount): dssfs saves the buffer before it
    exits, and says so by path (issue 7, 1.4: unsaved buffers at unmount vanished)."""
    emu = emulator
    m = mount_factory(emu, options=["prefetch=0"])
    abort = abort_file(m, request)
    new = read_bytes(m.path(*PAYLOAD)) + b"# written, never closed\n"
    fd = os.open(m.path(*PAYLOAD), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, new)
        m.check_exit_status = False
        with open(abort, "w") as f:
            f.write("1")
        m.proc.wait(timeout=HANG_GUARD)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert emu.api_get(RECIPE_EP)["payload"].encode() == new
    assert "/SALES/recipes/compute_orders_enriched/payload.py: saved" in m.stderr_text()
    assert unmount(m.mnt) == [] and not is_mounted(m.mnt)


def test_a_lazy_unmount_saves_at_the_writers_close(emulator, mount_factory):
    """`fusermount3 -uz` while a file is open with unsaved changes: the mount leaves the
    tree at once, the writer's close() saves (and returns 0), then dssfs exits."""
    emu = emulator
    m = mount_factory(emu, options=["prefetch=0"])
    new = read_bytes(m.path(*PAYLOAD)) + b"# closed after a lazy unmount\n"
    fd = os.open(m.path(*PAYLOAD), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, new)
        subprocess.run(["fusermount3", "-uz", m.mnt], check=True)
        assert not is_mounted(m.mnt)
        assert m.proc.poll() is None  # still serving the open file
    finally:
        os.close(fd)
    m.proc.wait(timeout=HANG_GUARD)
    assert m.proc.returncode == 0
    assert emu.api_get(RECIPE_EP)["payload"].encode() == new


@pytest.mark.expect_dssfs_errors
def test_unsaved_buffers_whose_saves_stall_are_logged_within_the_bound(emulator,
                                                                       mount_factory):
    """Two files hold unsaved changes at SIGTERM and DSS never answers their PUTs: dssfs
    exits within one request timeout per file (at most 30 s and one timeout in all:
    README, "Editing"), naming each file it could not save (issue 7, 1.4)."""
    emu = emulator
    m = mount_factory(emu, options=["timeout=2", "prefetch=0"])
    sql = ("SALES", "recipes", "compute_top_customers", "payload.sql")
    fds = []
    try:
        for path in (PAYLOAD, sql):
            fd = os.open(m.path(*path), os.O_WRONLY | os.O_APPEND)
            fds.append(fd)
            os.write(fd, b"\n# never saved\n")
        emu.add_fault(method="PUT", fault="stall", stall_s=120)
        rc, took = sigterm_and_wait(m)
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
    assert took <= 2 * 2 + 3.0, "dssfs took %.1f s to exit" % took
    err = m.stderr_text()
    for path in (PAYLOAD, sql):
        assert "/%s: not saved (at unmount)" % "/".join(path) in err, err
    assert b"never saved" not in emu.api_get(RECIPE_EP)["payload"].encode()


def test_an_aborted_connection_exits_promptly_with_a_read_stalled(emulator, mount_factory,
                                                                 request):
    """The kernel ends the session itself (`echo 1 > /sys/fs/fuse/connections/N/abort`,
    what an admin does to a hung mount) while `cat` waits on a GET that DSS never
    answers: dssfs ends that read and exits in a few seconds, not after its timeout
    (before: the whole 30 s)."""
    emu = emulator
    m = mount_factory(emu, options=["timeout=30", "retries=0", "prefetch=0"])
    os.listdir(m.path("SALES", "datasets", "orders"))     # only the schema GET is left
    abort = abort_file(m, request)
    emu.add_fault(path_regex=SCHEMA_RE, fault="stall", stall_s=120)
    emu.reset_stats()
    reader = cat(m.path(*SCHEMA))
    try:
        wait_for(lambda: emu.fault_stats().get("stall") == 1, "the stalled GET")
        m.check_exit_status = False
        t0 = time.monotonic()
        with open(abort, "w") as f:
            f.write("1")
        m.proc.wait(timeout=HANG_GUARD)
        took = time.monotonic() - t0
        assert took < 10.0, "dssfs took %.1f s to exit" % took
        out, err = reader.communicate(timeout=HANG_GUARD)
        assert reader.returncode != 0 and out == b""
        # like libfuse (and every FUSE filesystem), dssfs leaves an aborted mount to
        # `fusermount3 -u`: its folder answers ENOTCONN until then
        assert_errno(in_thread(os.listdir, m.mnt), errno.ENOTCONN)
        assert unmount(m.mnt) == [] and not is_mounted(m.mnt)
    finally:
        reap(reader)
    assert emu.log_lines() == [SCHEMA_GET]


def test_sigterm_lets_a_save_in_flight_complete(emulator_factory, mount_factory):
    """A save is under way (DSS answers each request after 1.5 s) when dssfs gets
    SIGTERM: the save completes, DSS gets exactly one PUT with the new bytes, the
    writer's close() returns 0, and dssfs then exits cleanly."""
    emu = emulator_factory(args=["--latency-ms", "1500"])
    m = mount_factory(emu, options=["prefetch=0"])
    path = m.path(*PAYLOAD)
    new = read_bytes(path) + b"# saved while dssfs was stopping\n"
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, new)
    emu.reset_stats()
    result = {}

    def close():
        try:
            os.close(fd)
            result["rc"] = 0
        except OSError as e:
            result["rc"] = e.errno

    t = threading.Thread(target=close, daemon=True)
    t.start()
    time.sleep(0.5)                  # the save's first request is in flight
    rc, _ = sigterm_and_wait(m)
    t.join(HANG_GUARD)
    assert not t.is_alive()
    assert result == {"rc": 0}
    assert rc == 0
    assert not is_mounted(m.mnt)
    assert emu.api_get(RECIPE_EP)["payload"].encode() == new
    puts = [ln for ln in emu.log_lines() if ln.startswith("PUT ")]
    assert puts == ["PUT /public/api/" + RECIPE_EP]
    assert "payload.py: saved" in m.stderr_text()
    assert "not saved" not in m.stderr_text()


WRITER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, lambda *a: None)     # a signal that does not kill
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, sys.stdin.buffer.read())
print("closing", flush=True)
try:
    os.close(fd)
    print("closed", flush=True)
except OSError as e:
    print("close failed:", e.errno, flush=True)
"""


def test_a_signal_does_not_cut_a_save(emulator_factory, mount_factory):
    """The writer gets a signal while its close() saves (DSS answers each request after
    1.5 s): the FUSE interrupt does not cut the save; close() returns 0 and exactly one
    PUT lands with the new bytes."""
    emu = emulator_factory(args=["--latency-ms", "1500"])
    m = mount_factory(emu, options=["prefetch=0"])
    path = m.path(*PAYLOAD)
    new = read_bytes(path) + b"# saved despite a signal\n"
    emu.reset_stats()
    w = subprocess.Popen(["/usr/bin/python3", "-c", WRITER, path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        w.stdin.write(new)
        w.stdin.close()
        w.stdin = None               # communicate() below has nothing to send
        assert w.stdout.readline() == b"closing\n"
        time.sleep(0.5)              # the save's first request is in flight
        w.send_signal(signal.SIGINT)
        out, err = w.communicate(timeout=HANG_GUARD)
    finally:
        reap(w)
    assert out == b"closed\n", (out, err)
    assert emu.api_get(RECIPE_EP)["payload"].encode() == new
    puts = [ln for ln in emu.log_lines() if ln.startswith("PUT ")]
    assert puts == ["PUT /public/api/" + RECIPE_EP]


def test_sighup_then_sigterm_with_a_read_stalled_exits_promptly(emulator, mount_factory):
    """The SIGHUP thread invalidates the kernel's caches while a read is stalled and
    SIGTERM follows at once: nothing in the shutdown waits for the stalled request or
    for the kernel."""
    emu = emulator
    m = mount_factory(emu, options=["timeout=30", "retries=0", "prefetch=0"])
    os.listdir(m.path("SALES", "datasets", "orders"))
    for f in ("settings.json", "metadata.json"):          # inodes for SIGHUP to visit
        read_bytes(m.path("SALES", "datasets", "orders", f))
    emu.add_fault(path_regex=SCHEMA_RE, fault="stall", stall_s=120)
    reader = cat(m.path(*SCHEMA))
    try:
        wait_for(lambda: emu.fault_stats().get("stall") == 1, "the stalled GET")
        os.kill(m.proc.pid, signal.SIGHUP)
        rc, took = sigterm_and_wait(m)
        assert rc == 0
        assert took < 10.0, "dssfs took %.1f s to exit" % took
        assert not is_mounted(m.mnt)
        reader.communicate(timeout=HANG_GUARD)
        assert reader.returncode != 0
    finally:
        reap(reader)
