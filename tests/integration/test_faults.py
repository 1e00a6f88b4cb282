"""A failing, flaky or absent DSS: explicit errors within bounded time, never a wrong copy.

The emulator injects faults (tests/emulator/README.md, "Fault injection"): random ones
at given rates (500, 503 with Retry-After, connection reset, truncated body, invalid
JSON), stalls and slow drips, and it can go down and come back on the same port
(pause/resume: connections are refused meanwhile).  Through the real mount:

- a whole-tree ``tar`` under ~5% mixed faults either copies every file with the right
  bytes or reports each miss with an explicit error (no short, empty or differing file,
  no emptied folder that tar did not report), and the same mount copies everything
  again once the faults stop;
- with DSS down, what is not cached fails with ECONNREFUSED, what is cached is served,
  and the same mount serves everything again once DSS is back (no remount);
- a stalled request fails with ETIMEDOUT after ``timeout``; a slow response within it
  is read in full;
- hostile data from the server (an invalid name, trailing garbage) is not shown as valid.

Times are only bounded from above, generously (3x the documented worst case: "does not
hang"); request counts are exact where they are asserted.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time

import pytest

from dssfs_harness import (CONTROL_PORT_ARGS, HANG_GUARD, api_path, assert_errno, errname,
                           escape_name, in_thread, read_bytes)

SCHEMA = ("SALES", "datasets", "orders", "schema.json")
SCHEMA_GET = "GET /public/api/projects/SALES/datasets/orders/schema"
SCHEMA_RE = r"^/projects/SALES/datasets/orders/schema$"

# What a failed read may report: the errnos of the README's error table.
ERRNO_TEXTS = tuple(os.strerror(e) for e in (errno.EIO, errno.ECONNREFUSED, errno.ETIMEDOUT,
                                             errno.EAGAIN, errno.EHOSTUNREACH))


def timed(fn, *args):
    """(in_thread result, seconds)."""
    t0 = time.monotonic()
    result = in_thread(fn, *args)
    return result, time.monotonic() - t0


def request_worst_case(timeout, retries):
    """The README's bound of one read request: 1 + retries attempts of at most
    ``timeout`` each (``connect_timeout`` for an attempt that cannot connect), and
    between them waits of at most 0.1 s, 0.2 s, 0.4 s ... capped at 2 s (no
    Retry-After here)."""
    return (1 + retries) * timeout + sum(min(0.1 * 2 ** i, 2.0) for i in range(retries))


# --- a whole-tree tar under random faults ----------------------------------------------

TAR_FAULTS = {"500": 0.01, "503": 0.01, "reset": 0.01, "truncate": 0.01, "badjson": 0.01}
TAR_LINE = re.compile(r"^tar: (?P<path>\./.*?): (?P<what>[^:]+): (?P<err>[^:]+)$")


def tar_tree(src, workdir, name):
    """``tar c`` of src (to a file: tar skips reading files when writing to /dev/null),
    extracted under workdir/name.  (returncode, stderr lines, {path: bytes or None for
    a folder})."""
    archive = workdir / (name + ".tar")
    with open(archive, "wb") as out:
        r = subprocess.run(["tar", "cf", "-", "-C", src, "."], stdout=out,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD)
    dest = workdir / name
    dest.mkdir()
    subprocess.run(["tar", "xf", str(archive), "-C", str(dest)], check=True,
                   capture_output=True, timeout=HANG_GUARD)
    tree = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        rel = os.path.relpath(dirpath, dest)
        for d in dirnames:
            tree[os.path.normpath(os.path.join(rel, d))] = None
        for f in filenames:
            tree[os.path.normpath(os.path.join(rel, f))] = read_bytes(os.path.join(dirpath, f))
    return r.returncode, r.stderr.decode("utf-8", "replace").splitlines(), tree


def reported_paths(stderr_lines):
    """The paths tar reported an explicit error for; fails on any other message
    (``file changed as we read it``, ``File shrank``: a short read without an error)."""
    paths = []
    for line in stderr_lines:
        if line == "tar: Exiting with failure status due to previous errors":
            continue
        m = TAR_LINE.match(line)
        assert m and m.group("err") in ERRNO_TEXTS, "tar said more than an error: %r" % line
        paths.append(os.path.normpath(m.group("path")))
    return paths


def unexplained_differences(ref, got, reported):
    """Differences between the fault-free copy and this one that tar did not report
    (a path is reported if it or a folder above it is)."""
    def excused(path):
        return any(path == r or path.startswith(r + "/") or r == "." for r in reported)

    out = []
    for path, data in ref.items():
        if path not in got:
            if not excused(path):
                out.append("missing: " + path)
        elif got[path] != data:
            if not excused(path):
                out.append("%s: %s" % ("differs" if data is not None and got[path] is not None
                                       else "wrong type", path))
    out += ["not on DSS: " + p for p in got if p not in ref]
    return out


@pytest.mark.expect_dssfs_errors
@pytest.mark.parametrize("prefetch", [16, 0])
def test_tar_under_random_faults_is_complete_or_reports_every_miss(
        emulator_factory, mount_factory, tmp_path, prefetch):
    """Three seeds of ~5% mixed faults on every GET of a cold whole-tree tar: each run
    copies everything byte for byte, or exits nonzero and reports, with an errno, every
    file or folder it missed; never a short, empty or differing file it kept quiet
    about, never a folder emptied silently.  After each run, with the faults stopped,
    the same mount copies everything again (errors are not cached).

    With prefetch, most faults hit prefetches, whose failures the walk's own reads
    redo; without it, every fault hits a read of tar."""
    demo = os.path.join(os.path.dirname(__file__), "..", "emulator", "demo")
    emu = emulator_factory(args=["--generate", "3,8", "--fixture", demo])
    m = mount_factory(emu, options=["timeout=5", "connect_timeout=2", "retries=2",
                                    "prefetch=%d" % prefetch])
    rc, err, ref = tar_tree(m.mnt, tmp_path, "ref")
    assert rc == 0 and err == [], err
    assert sum(1 for v in ref.values() if v is not None) > 200
    failed_runs = 0
    for seed in (1, 2, 3):
        m.sighup()                                   # a cold walk: every GET can fail
        emu.reset_stats()
        emu.set_fault_rates(TAR_FAULTS, seed=seed)
        rc, err, got = tar_tree(m.mnt, tmp_path, "seed%d" % seed)
        emu.clear_fault_rates()
        injected = emu.fault_stats()
        assert sum(injected.values()) > 0, "no fault was injected (seed %d)" % seed
        reported = reported_paths(err)
        if rc == 0:
            assert err == [] and got == ref, "seed %d: tar succeeded with a wrong copy" % seed
        else:
            failed_runs += 1
            assert reported, "seed %d: tar failed without saying why: %s" % (seed, err)
        assert unexplained_differences(ref, got, reported) == [], (seed, err, injected)
        # the same mount, faults stopped: everything again, without a SIGHUP
        rc, err, again = tar_tree(m.mnt, tmp_path, "seed%d-again" % seed)
        assert rc == 0 and err == [] and again == ref, (seed, err)
    if prefetch == 0:
        # 500, truncate and badjson are not retried: the error path was exercised (a
        # run may still succeed: when the kernel revalidates a name it still holds and
        # that lookup fails, it drops the name and looks it up afresh, a second GET)
        assert failed_runs > 0


# --- DSS down, then back -----------------------------------------------------------------

@pytest.mark.expect_dssfs_errors
def test_dss_down_then_back_the_same_mount_recovers(emulator_factory, mount_factory):
    """While DSS refuses connections, what is not cached fails with ECONNREFUSED in
    bounded time (ls, cat, stat), what is cached is still served; once DSS listens
    again, the same mount (same process, no SIGHUP) serves everything."""
    connect_timeout, retries = 1, 2
    emu = emulator_factory(args=list(CONTROL_PORT_ARGS))
    m = mount_factory(emu, options=["timeout=5", "connect_timeout=%d" % connect_timeout,
                                    "retries=%d" % retries, "prefetch=0"])
    cached = read_bytes(m.path("SALES", "metadata.json"))
    assert sorted(os.listdir(m.path("SALES", "datasets")))
    # Each operation below needs one uncached resource (what is above it is cached),
    # and a refused attempt ends within connect_timeout.
    bound = 3 * request_worst_case(connect_timeout, retries)

    emu.reset_stats()
    emu.pause()
    uncached = (
        (os.listdir, m.path("MARKETING", "recipes")),
        (read_bytes, m.path(*SCHEMA)),
        (os.stat, m.path("HR_ANALYTICS", "datasets", "employees", "schema.json")),
    )
    for fn, path in uncached:
        result, took = timed(fn, path)
        assert_errno(result, errno.ECONNREFUSED)
        assert took < bound, "%s(%s) took %.1f s" % (fn.__name__, path, took)
    for cmd in (["ls", m.path("MARKETING", "recipes")], ["cat", m.path(*SCHEMA)],
                ["stat", m.path("HR_ANALYTICS", "variables.json")]):
        r = subprocess.run(cmd, capture_output=True, timeout=HANG_GUARD)
        assert r.returncode != 0 and r.stdout == b"", cmd
        assert b"Connection refused" in r.stderr, (cmd, r.stderr)
    assert read_bytes(m.path("SALES", "metadata.json")) == cached   # within cache_ttl
    assert emu.control_always("GET", "stats")["requests"] == 0   # nothing got through
    assert "Connection refused" in m.stderr_text()

    emu.resume()
    assert m.proc.poll() is None
    assert sorted(os.listdir(m.path("MARKETING", "recipes"))) == sorted(
        r["name"] for r in emu.api_get("projects/MARKETING/recipes/"))
    assert json.loads(read_bytes(m.path(*SCHEMA))) == emu.api_get(
        "projects/SALES/datasets/orders/schema")
    st = os.stat(m.path("HR_ANALYTICS", "datasets", "employees", "schema.json"))
    assert st.st_size == len(read_bytes(m.path("HR_ANALYTICS", "datasets", "employees",
                                               "schema.json")))
    r = subprocess.run(["cat", m.path("HR_ANALYTICS", "variables.json")], capture_output=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 0 and json.loads(r.stdout) == emu.api_get(
        "projects/HR_ANALYTICS/variables/")


@pytest.mark.expect_dssfs_errors
def test_dss_down_during_a_walk_fails_explicitly_and_recovers(emulator_factory, mount_factory,
                                                              tmp_path):
    """DSS goes down in the middle of a cold tar (its connections closed, new ones
    refused): tar reports errors; once DSS is back, the same mount copies everything."""
    emu = emulator_factory(args=list(CONTROL_PORT_ARGS))
    m = mount_factory(emu, options=["timeout=5", "connect_timeout=1", "retries=0"])
    rc, err, ref = tar_tree(m.mnt, tmp_path, "ref")
    assert rc == 0 and err == [], err
    m.sighup()
    # The walk blocks on one listing; DSS goes down while it waits there.
    emu.add_fault(path_regex=r"^/projects/MARKETING/datasets/?$", fault="stall", stall_s=30)
    emu.reset_stats()
    proc = subprocess.Popen(["tar", "cf", "-", "-C", m.mnt, "."], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + HANG_GUARD
        while not emu.fault_stats().get("stall") and time.monotonic() < deadline:
            time.sleep(0.01)
        emu.pause()
        out, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        emu.resume()
    emu.clear_faults()
    assert proc.returncode != 0
    reported = reported_paths(err.decode().splitlines())     # only explicit errors
    assert "MARKETING/datasets" in reported, err
    assert b"Connection refused" in err
    rc, err, again = tar_tree(m.mnt, tmp_path, "again")
    assert rc == 0 and err == [] and again == ref, err


# --- stalls and slow responses ----------------------------------------------------------

@pytest.mark.expect_dssfs_errors
def test_a_stalled_request_times_out_and_a_slow_one_within_timeout_is_read(
        emulator_factory, mount_factory):
    timeout = 2
    emu = emulator_factory()
    m = mount_factory(emu, options=["timeout=%d" % timeout, "retries=0", "prefetch=0"])
    os.listdir(m.path("SALES", "datasets", "orders"))    # only the schema GET is left
    emu.add_fault(path_regex=SCHEMA_RE, fault="stall", stall_s=20)
    emu.reset_stats()
    result, took = timed(read_bytes, m.path(*SCHEMA))
    assert_errno(result, errno.ETIMEDOUT)
    assert took < 3 * timeout, "the stalled read took %.1f s" % took
    assert emu.log_lines() == [SCHEMA_GET]           # retries=0, a timeout is not resent
    r = subprocess.run(["cat", m.path(*SCHEMA)], capture_output=True, timeout=HANG_GUARD)
    assert r.returncode != 0 and r.stdout == b""
    assert "Connection timed out" in r.stderr.decode()

    # a stalled listing: ls fails, in bounded time
    emu.add_fault(path_regex=r"^/projects/MARKETING/recipes/?$", fault="stall", stall_s=20)
    t0 = time.monotonic()
    r = subprocess.run(["ls", m.path("MARKETING", "recipes")], capture_output=True,
                       timeout=HANG_GUARD)
    assert time.monotonic() - t0 < 3 * timeout
    assert r.returncode != 0 and r.stdout == b""

    # slow, but complete within the timeout: read in full
    emu.clear_faults()
    emu.add_fault(path_regex=SCHEMA_RE, fault="drip", drip_bytes=64, drip_interval_ms=20)
    expected = emu.api_get("projects/SALES/datasets/orders/schema")
    assert len(json.dumps(expected)) // 64 * 0.02 < timeout / 2   # the drip fits
    emu.reset_stats()
    data = read_bytes(m.path(*SCHEMA))
    assert json.loads(data) == expected
    assert os.stat(m.path(*SCHEMA)).st_size == len(data)
    assert emu.log_lines() == [SCHEMA_GET] and emu.fault_stats() == {"drip": 1}

    # slow beyond the timeout (the timeout covers the transfer): ETIMEDOUT, bounded
    emu.add_fault(path_regex=r"^/projects/SALES/datasets/?$", fault="drip", drip_bytes=16,
                  drip_interval_ms=200)
    m.sighup()
    result, took = timed(os.listdir, m.path("SALES", "datasets"))
    assert_errno(result, errno.ETIMEDOUT)
    assert took < 3 * timeout, "the slow listing took %.1f s" % took


@pytest.mark.expect_dssfs_errors
def test_503_with_retry_after_is_retried_within_the_bound(emulator_factory, mount_factory):
    """A 503 (with Retry-After: 1) is retried ``retries`` times, then EIO; each
    attempt is one GET; a single 503 is absorbed."""
    emu = emulator_factory()
    m = mount_factory(emu, options=["retries=2", "prefetch=0"])
    os.listdir(m.path("SALES", "datasets", "orders"))
    emu.add_fault(path_regex=SCHEMA_RE, fault=503, retry_after=1)
    emu.reset_stats()
    result, took = timed(read_bytes, m.path(*SCHEMA))
    assert_errno(result, errno.EIO)
    assert emu.log_lines() == [SCHEMA_GET] * 3
    assert took < 3 * request_worst_case(30, 2)
    emu.clear_faults()
    emu.add_fault(path_regex=SCHEMA_RE, fault=503, count=1)
    emu.reset_stats()
    assert json.loads(read_bytes(m.path(*SCHEMA)))["columns"]
    assert emu.log_lines() == [SCHEMA_GET] * 2


@pytest.mark.expect_dssfs_errors
@pytest.mark.parametrize("kind", ["reset", "truncate", "badjson"])
def test_a_broken_response_is_an_error_never_partial_content(emulator, mount_factory, kind):
    emu = emulator
    m = mount_factory(emu, options=["prefetch=0"])
    os.listdir(m.path("SALES", "datasets", "orders"))
    emu.add_fault(path_regex=SCHEMA_RE, fault=kind)
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    r = subprocess.run(["cat", m.path(*SCHEMA)], capture_output=True, timeout=HANG_GUARD)
    assert r.returncode != 0 and r.stdout == b""
    emu.clear_faults()
    assert json.loads(read_bytes(m.path(*SCHEMA))) == emu.api_get(
        "projects/SALES/datasets/orders/schema")


# --- hostile data from the server (design 5.2) -----------------------------------------

WEIRD = "weird\ud800name"     # a lone surrogate: valid JSON text, no UTF-8 form


@pytest.mark.expect_dssfs_errors
def test_an_invalid_name_in_a_listing_skips_that_item_only(emulator_factory, mount_factory):
    emu = emulator_factory()
    status, _ = emu.request("POST", "/public/api/" + api_path("projects", "SALES", "datasets",
                                                             trailing_slash=True),
                            body=b'{"name": "weird\\ud800name"}', key=emu.admin_key)
    assert status == 200
    names = [d["name"] for d in emu.api_get("projects/SALES/datasets/")]
    assert WEIRD in names
    m = mount_factory(emu)
    log_before = len(m.stderr_text().splitlines())
    listed = in_thread(os.listdir, m.path("SALES", "datasets"))
    assert listed[0] == "ok", "ls SALES/datasets: %s" % (listed[1],)
    assert sorted(listed[1]) == sorted(escape_name(n) for n in names if n != WEIRD)
    assert json.loads(read_bytes(m.path(*SCHEMA)))["columns"]
    new_lines = m.stderr_text().splitlines()[log_before:]
    assert any(ln.startswith("dssfs: ") for ln in new_lines), "the skipped item is not logged"


@pytest.mark.expect_dssfs_errors
def test_trailing_garbage_after_the_json_is_an_error(emulator, mount_factory):
    emu = emulator
    m = mount_factory(emu, options=["prefetch=0"])
    os.listdir(m.path("SALES", "datasets", "orders"))
    emu.add_fault(path_regex=SCHEMA_RE, fault="garbage", garbage_text="xyz")
    emu.add_fault(path_regex=r"^/projects/MARKETING/recipes/?$", fault="garbage",
                  garbage_text="]")
    result = in_thread(read_bytes, m.path(*SCHEMA))
    assert_errno(result, errno.EIO)
    r = subprocess.run(["cat", m.path(*SCHEMA)], capture_output=True, timeout=HANG_GUARD)
    assert r.returncode != 0 and r.stdout == b""
    assert_errno(in_thread(os.listdir, m.path("MARKETING", "recipes")), errno.EIO)
    assert "text after the JSON document" in m.stderr_text()


@pytest.mark.expect_dssfs_errors
def test_stat_of_a_folder_whose_listing_cannot_be_fetched_is_an_error(emulator_factory,
                                                                     mount_factory):
    emu = emulator_factory(args=list(CONTROL_PORT_ARGS))
    m = mount_factory(emu, options=["timeout=2", "connect_timeout=1", "retries=0"])
    folders = (("SALES",), ("SALES", "datasets"), ("SALES", "datasets", "orders"))
    fds = [os.open(m.path(*f), os.O_RDONLY | os.O_DIRECTORY) for f in folders]
    try:
        before = [os.fstat(fd).st_mtime_ns for fd in fds]
        emu.pause()
        m.sighup()
        for f, fd, mtime in zip(folders, fds, before):
            result = in_thread(os.fstat, fd)
            assert result[0] == "err", "fstat of %s with DSS down: mtime %s (was %s)" % (
                "/".join(f), result[1].st_mtime_ns, mtime)
            assert result[1].errno == errno.ECONNREFUSED, errname(result[1].errno)
        emu.resume()
        assert [os.fstat(fd).st_mtime_ns for fd in fds] == before
    finally:
        for fd in fds:
            os.close(fd)
