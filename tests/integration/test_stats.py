"""`dssfs stats MOUNTPOINT`: the figures a user can see, checked against the emulator.

The figures are the mount root's extended attribute user.dssfs.stats (not listed, so no
backup copies it) and are logged on SIGUSR1.  They also let a test see what the daemon
holds: after the kernel forgets every inode, only the root's is left, whatever error
paths the operations took (issue 7, 2.3: lookup references leaked on error paths).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time

import pytest

from dssfs_harness import HANG_GUARD, dssfs_bin, errno_of, read_bytes

VARIABLES = ("SALES", "variables.json")
RECIPE = ("SALES", "recipes", "compute_orders_enriched")


def stats(m) -> dict:
    r = subprocess.run([str(dssfs_bin()), "stats", m.mnt], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def quiet_stats(emu, *mounts):
    """The mounts' figures and the emulator's request count, once nothing is in flight
    (prefetch done): the same figures read twice around the emulator's count."""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        before = [stats(m) for m in mounts]
        count = emu.request_count()
        after = [stats(m) for m in mounts]
        busy = any(s["requests"]["in_flight"] or (s["prefetch"] or {}).get("queued")
                   for s in after)
        if not busy and [s["requests"] for s in before] == [s["requests"] for s in after]:
            return after, count
        time.sleep(0.2)
    raise AssertionError("the mounts did not go quiet")


def write_close(path, data: bytes):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@pytest.mark.expect_dssfs_errors
def test_stats_count_what_the_emulator_answered(emulator, mount_factory):
    """Two mounts of one emulator read, save, and conflict; the requests each counts, by
    method, add up to exactly what the emulator answered, and the saves, the conflict and
    the errors are those that happened."""
    emu = emulator
    editor, colleague = mount_factory(emu), mount_factory(emu)
    subprocess.run(["tar", "cf", "/dev/null", "-C", editor.mnt, "SALES"], check=True,
                   capture_output=True)
    mine = json.loads(read_bytes(editor.path(*VARIABLES)))
    theirs = json.loads(read_bytes(colleague.path(*VARIABLES)))
    theirs["standard"]["colleague"] = "was here"
    write_close(colleague.path(*VARIABLES), (json.dumps(theirs, indent=2) + "\n").encode())
    mine["standard"]["editor"] = "me"
    assert errno_of(write_close, editor.path(*VARIABLES),
                    (json.dumps(mine, indent=2) + "\n").encode()) == errno.ESTALE
    assert errno_of(os.stat, editor.path("SALES", "no-such-folder")) == errno.ENOENT

    (e, c), count = quiet_stats(emu, editor, colleague)
    assert e["requests"]["total"] + c["requests"]["total"] == count
    methods = {}
    for line in emu.log_lines(since_reset=False):
        if line.startswith(("GET /public/api/", "PUT /public/api/")):
            methods[line.split()[0]] = methods.get(line.split()[0], 0) + 1
    assert e["requests"]["GET"] + c["requests"]["GET"] == methods["GET"]
    assert e["requests"]["PUT"] + c["requests"]["PUT"] == methods["PUT"] == 1
    assert (e["saves"], c["saves"]) == ({"saved": 0, "conflicts": 1, "failed": 0},
                                        {"saved": 1, "conflicts": 0, "failed": 0})
    assert e["errors"].get("ESTALE") == 1 and "ESTALE" not in c["errors"]
    assert e["errors"].get("ENOENT", 0) >= 1
    assert e["bytes"]["received"] > 0 and c["bytes"]["sent"] > 0 == e["bytes"]["sent"]
    assert e["cache"]["max_bytes"] == 32 << 20
    assert 0 < e["memory"]["rss_bytes"] <= e["memory"]["peak_rss_bytes"]
    assert e["memory"]["inodes"] > 1


def test_stats_are_not_a_file_and_not_listed(mounted):
    """Nothing in the tree, nothing a backup copies: the root lists no extended attribute,
    other names are not supported, and `dssfs stats` elsewhere says what is wrong."""
    emu, m = mounted
    assert ".dssfs" not in " ".join(os.listdir(m.mnt))
    assert errno_of(os.listxattr, m.mnt) in (errno.EOPNOTSUPP, None)
    if errno_of(os.listxattr, m.mnt) is None:
        assert os.listxattr(m.mnt) == []
    assert errno_of(os.getxattr, m.mnt, "user.other") == errno.EOPNOTSUPP
    assert errno_of(os.getxattr, m.path(*VARIABLES), "user.dssfs.stats") == errno.EOPNOTSUPP
    r = subprocess.run([str(dssfs_bin()), "stats", "/tmp"], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 1 and "not a dssfs mount" in r.stderr


def test_sigusr1_logs_the_figures(mounted):
    emu, m = mounted
    read_bytes(m.path(*VARIABLES))
    os.kill(m.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + HANG_GUARD
    while "stats: {" not in m.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    line = [ln for ln in m.stderr_text().splitlines() if "stats: {" in ln][-1]
    logged = json.loads(line.split("stats: ", 1)[1])
    assert logged["requests"]["total"] >= 1 and "memory" in logged


# --- issue 7, 2.3: no lookup reference is leaked, whatever path an operation takes -------

def drop_kernel_inodes():
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
    except OSError as e:
        pytest.skip("cannot make the kernel drop its inodes here: %s" % e)


def held(m, want=1, timeout=10.0):
    """(inodes, nodes) once the kernel's forgets have arrived, or what is left."""
    deadline = time.monotonic() + timeout
    while True:
        mem = stats(m)["memory"]
        if (mem["inodes"], mem["nodes"]) == (want, want) or time.monotonic() > deadline:
            return mem["inodes"], mem["nodes"]
        drop_kernel_inodes()
        time.sleep(0.1)


def exercise_every_reference_path(emu, m):
    """Lookups and creates that succeed and that fail in every way they can."""
    ds = m.path("SALES", "datasets")
    rec = m.path(*RECIPE)
    long = "n" * 300
    # lookups that fail: too long, not there, DSS failing
    for d in (ds, rec, m.mnt):
        assert errno_of(os.stat, os.path.join(d, long)) == errno.ENAMETOOLONG
    assert errno_of(os.stat, os.path.join(ds, "no_such_dataset", "settings.json")) \
        == errno.ENOENT
    assert errno_of(os.stat, m.path("NOPROJECT")) == errno.ENOENT
    emu.add_fault(method="GET", path_regex=r"^/projects/SALES/scenarios/?$", status=500)
    m.sighup()  # (prefetch may have cached the listing)
    assert errno_of(os.stat, m.path("SALES", "scenarios", "nightly")) == errno.EIO
    emu.clear_faults()
    # creates that fail: a DSS object's name, too long, taken, a folder, links
    assert errno_of(os.open, os.path.join(ds, "newds"), os.O_CREAT | os.O_WRONLY) \
        == errno.EPERM
    assert errno_of(os.open, os.path.join(rec, long), os.O_CREAT | os.O_WRONLY) \
        == errno.ENAMETOOLONG
    swp = os.path.join(rec, ".payload.py.swp")
    with open(swp, "wb") as f:
        f.write(b"swap")
    assert errno_of(os.open, swp, os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    assert errno_of(os.mkdir, os.path.join(rec, "sub")) is not None
    assert errno_of(os.symlink, "payload.py", os.path.join(rec, "link")) is not None
    assert errno_of(os.link, os.path.join(rec, "payload.py"), os.path.join(rec, "hard")) \
        is not None
    # scratch files found, moved, removed; a write-then-rename save
    os.stat(swp)
    os.rename(swp, swp + "2")
    os.unlink(swp + "2")
    payload = os.path.join(rec, "payload.py")
    tmp = payload + ".tmp"
    with open(tmp, "wb") as f:
        f.write(read_bytes(payload) + b"# one more line\n")
    os.rename(tmp, payload)
    # and a walk
    for root, dirs, files in os.walk(m.path("SALES")):
        for f in files:
            os.stat(os.path.join(root, f))


@pytest.mark.expect_dssfs_errors
def test_the_kernel_forgetting_everything_leaves_only_the_root(emulator, mount_factory):
    """After lookups and creates that fail in every way they can (and some that succeed),
    the kernel drops its inodes: dssfs then holds the root's inode and binding only.  A
    reference taken on an error path and never given to the kernel would stay."""
    emu = emulator
    m = mount_factory(emu)
    exercise_every_reference_path(emu, m)
    assert stats(m)["memory"]["inodes"] > 10
    drop_kernel_inodes()
    assert held(m) == (1, 1)
