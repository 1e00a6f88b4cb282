"""The daemon as a system service: its thread pool, who may use the mount, what other
processes can learn from it, and mounting it the way mount(8) and /etc/fstab do.

Runs as root (FUSE mounts, a second uid, mount(8)); tests that need something the machine
lacks are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from dssfs_harness import (HANG_GUARD, READER_KEY, STOP_TIMEOUT, Mount, clean_env, dssfs_bin,
                           is_mounted, read_bytes, unmount, project_names)

STRACE = shutil.which("strace")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


# --- mounts made here --------------------------------------------------------------------------

NO_PTRACE = ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", "--"]


class WrappedMount(Mount):
    """dssfs started through another program (``prefix``, which ends by exec'ing it)."""

    def __init__(self, workdir, prefix=(), **kw):
        super().__init__(workdir, **kw)
        self.prefix = list(prefix)

    def command(self):
        return self.prefix + super().command()


class TracedMount(WrappedMount):
    """dssfs run under ``strace -f``, recording thread creations and opens."""

    def __init__(self, workdir, **kw):
        super().__init__(workdir, **kw)
        self.trace_path = self.workdir / "strace.out"
        self.prefix = [STRACE, "-f", "--seccomp-bpf", "-qq", "-e", "signal=none",
                       "-e", "trace=clone,clone3,openat", "-o", str(self.trace_path)]

    @property
    def daemon_pid(self) -> int:
        """The pid of dssfs itself (strace's child)."""
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            return int(f.read().split()[0])

    def trace_size(self) -> int:
        return self.trace_path.stat().st_size

    def trace(self, start: int = 0) -> list[str]:
        with open(self.trace_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace").splitlines()


THREAD_CREATION = re.compile(r"\bclone3?\(.*CLONE_THREAD")
DEV_FUSE_OPEN = re.compile(r"\bopenat\(.*\"/dev/fuse\"")


def thread_creations(lines) -> int:
    return sum(1 for ln in lines if THREAD_CREATION.search(ln))


def dev_fuse_opens(lines) -> int:
    return sum(1 for ln in lines if DEV_FUSE_OPEN.search(ln))


@pytest.fixture
def system_mount(request, tmp_path, home, emulator_factory):
    """make(emu, options=(), traced=False, prefix=(), workdir=None, env=None) -> a started
    Mount (under strace if traced, else started through prefix if given),
    unmounted and checked in the finalizer (before the emulators stop)."""
    made = []

    def make(emu, options=(), traced=False, prefix=(), workdir=None, env=None):
        full_env = clean_env(home, env if env is not None else
                             {"DKU_DSS_URL": emu.url, "DKU_API_KEY": emu.admin_key})
        workdir = workdir or tmp_path / ("sysmount%d" % len(made))
        if traced:
            # LeakSanitizer cannot stop the world under ptrace; the mounts of the other
            # tests check leaks.
            asan = full_env.get("ASAN_OPTIONS")
            full_env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "detect_leaks=0"
            m = TracedMount(workdir, options=options, env=full_env)
        else:
            m = WrappedMount(workdir, prefix=prefix, options=options, env=full_env)
        made.append(m)
        return m.start()

    yield make
    problems = []
    for m in reversed(made):
        problems += m.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --- the thread pool ---------------------------------------------------------------------------

N_CATS = 60
DEFAULT_MAX_THREADS = 10       # libfuse's default for -o max_threads


@pytest.fixture
def wide_emulator(emulator_factory):
    """60 datasets (4 projects x 15), each answer 20 ms late so that readers overlap."""
    return emulator_factory(args=["--generate", "4,15", "--latency-ms", "20"])


def _schema_paths(emu):
    """{relative path of 60 different schema.json files: their JSON} (direct GETs)."""
    out = {}
    for p in emu.api_get("projects/"):
        for d in emu.api_get("projects/%s/datasets/" % p["projectKey"]):
            out[(p["projectKey"], "datasets", d["name"], "schema.json")] = emu.api_get(
                "projects/%s/datasets/%s/schema" % (p["projectKey"], d["name"]))
    assert len(out) == N_CATS
    return out


def _tasks(pid) -> int:
    try:
        return len(os.listdir("/proc/%d/task" % pid))
    except OSError:
        return 0


def _parallel_cats(m, expected):
    """Runs one ``cat`` per file, all at once, while sampling the daemon's thread count.
    Returns the largest thread count seen."""
    pid = m.daemon_pid
    seen = [_tasks(pid)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            seen.append(_tasks(pid))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        procs = {rel: subprocess.Popen(["cat", m.path(*rel)], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE) for rel in expected}
        for rel, p in procs.items():
            out, err = p.communicate(timeout=HANG_GUARD)
            assert p.returncode == 0, (rel, err)
            assert json.loads(out) == expected[rel], rel
    finally:
        done.set()
        sampler.join(HANG_GUARD)
    return max(seen)


def _loaded_mount(emu, system_mount, options):
    """Mounts traced with ``options`` (no prefetch: only readers make requests), runs the
    60 readers, and returns (mount, thread creations and /dev/fuse opens during the load,
    /dev/fuse opens in all, threads before, most threads during, most requests at once)."""
    expected = _schema_paths(emu)
    m = system_mount(emu, options=["prefetch=0"] + list(options), traced=True)
    assert project_names(m.mnt) == sorted({rel[0] for rel in expected})
    m.settle()
    before = _tasks(m.daemon_pid)
    start = m.trace_size()
    emu.reset_stats()
    most = _parallel_cats(m, expected)
    m.settle()
    window = m.trace(start)
    return (m, thread_creations(window), dev_fuse_opens(window), dev_fuse_opens(m.trace()),
            before, most, emu.stats()["max_in_flight"])


@pytest.mark.skipif(STRACE is None, reason="needs strace (packaging/install-deps.sh)")
@needs_root
def test_parallel_readers_reuse_a_bounded_pool_of_workers(wide_emulator, system_mount):
    """60 parallel cats: at most max_threads workers, created once and kept (libfuse's
    default keeps idle workers), and /dev/fuse opened once (by the mount): no thread per
    request, no cloned device per worker without -o clone_fd."""
    m, created, opens_during, opens, before, most, in_flight = _loaded_mount(
        wide_emulator, system_mount, [])
    assert created <= DEFAULT_MAX_THREADS - 1, "%d threads created for %d reads" % (
        created, N_CATS)
    assert opens == 1 and opens_during == 0, "/dev/fuse opened %d times" % opens
    assert most <= before + DEFAULT_MAX_THREADS - 1, (before, most)
    assert 2 <= in_flight <= DEFAULT_MAX_THREADS


@pytest.mark.skipif(STRACE is None, reason="needs strace (packaging/install-deps.sh)")
@needs_root
def test_max_threads_caps_the_workers(wide_emulator, system_mount):
    m, created, opens_during, opens, before, most, in_flight = _loaded_mount(
        wide_emulator, system_mount, ["max_threads=4"])
    assert created <= 3, created
    assert most <= before + 3, (before, most)
    assert 2 <= in_flight <= 4
    assert opens == 1


@pytest.mark.skipif(STRACE is None, reason="needs strace (packaging/install-deps.sh)")
@needs_root
def test_clone_fd_gives_each_worker_its_own_device(wide_emulator, system_mount):
    m, created, opens_during, opens, before, most, in_flight = _loaded_mount(
        wide_emulator, system_mount, ["clone_fd", "max_threads=6"])
    assert created <= 5, created
    # the mount's own open, then one per worker (the first one and those created since)
    assert opens_during == created
    assert 2 <= opens <= 1 + 6, opens
    assert in_flight <= 6


@pytest.mark.skipif(STRACE is None, reason="needs strace (packaging/install-deps.sh)")
@needs_root
def test_max_idle_threads_lets_idle_workers_go(wide_emulator, system_mount):
    """-o max_idle_threads=1: after the burst, the workers beyond one idle one end (the
    default keeps them all)."""
    m, created, opens_during, opens, before, most, in_flight = _loaded_mount(
        wide_emulator, system_mount, ["max_idle_threads=1"])
    assert created >= 1 and most > before
    deadline = time.monotonic() + HANG_GUARD
    while _tasks(m.daemon_pid) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _tasks(m.daemon_pid) <= before


# --- who may use the mount: default_permissions ------------------------------------------------

NOBODY = 65534
SCHEMA = ("SALES", "datasets", "orders", "schema.json")
SWAP = ("SALES", "datasets", "orders", ".schema.json.swp")

# Run as nobody: tries each operation on the mount and prints {name: "ok" or errno name}.
_NOBODY_SCRIPT = r"""
import errno, json, os, sys
mnt, schema, swap = sys.argv[1:4]
folder = os.path.dirname(schema)
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def read(p):
    with open(p, "rb") as f:
        return f.read()
def rewrite(p):
    doc = json.loads(read(schema))
    doc["userModified"] = not doc.get("userModified")
    with open(p, "r+b") as f:        # a valid change: saved if the open is allowed
        f.truncate(0)
        f.write(json.dumps(doc).encode())
def overwrite(p):
    with open(p, "wb") as f:
        f.write(b"nobody was here")
attempt("list", lambda: os.listdir(folder))
attempt("read", lambda: read(schema))
attempt("write", lambda: rewrite(schema))
attempt("truncate", lambda: os.truncate(schema, 0))
attempt("create", lambda: overwrite(os.path.join(folder, ".nobody.swp")))
attempt("read_scratch", lambda: read(swap))
attempt("overwrite_scratch", lambda: overwrite(swap))
attempt("delete_scratch", lambda: os.unlink(swap))
attempt("rename_scratch", lambda: os.rename(swap, swap + "~"))
attempt("chmod_scratch", lambda: os.chmod(swap, 0o666))
print(json.dumps(out))
"""


@pytest.fixture
def public_dir():
    """A folder every user can traverse (pytest's own temporary folders are 0700)."""
    d = tempfile.mkdtemp(prefix="dssfs-system-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _as_nobody(m):
    r = subprocess.run([sys.executable, "-c", _NOBODY_SCRIPT, m.mnt, m.path(*SCHEMA),
                        m.path(*SWAP)], user=NOBODY, group=NOBODY, extra_groups=[],
                       cwd="/", env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"},
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@needs_root
def test_other_users_get_what_the_modes_allow(emulator, public_dir, system_mount):
    """allow_other, mounted by root: nobody reads the 0644/0755 tree, but writing DSS
    objects (0644 root) and touching root's 0600 scratch file is refused by the kernel
    (EACCES, EPERM for chmod), and no request but GETs reaches DSS; root still writes."""
    m = system_mount(emulator, options=["allow_other", "prefetch=0"],
                     workdir=os.path.join(public_dir, "m"))
    before = read_bytes(m.path(*SCHEMA))
    fd = os.open(m.path(*SWAP), os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"root's swap")
    os.close(fd)
    assert stat.S_IMODE(os.stat(m.path(*SWAP)).st_mode) == 0o600
    emulator.reset_stats()
    got = _as_nobody(m)
    m.settle()
    assert got == {"list": "ok", "read": "ok",
                   "write": "EACCES", "truncate": "EACCES", "create": "EACCES",
                   "read_scratch": "EACCES", "overwrite_scratch": "EACCES",
                   "delete_scratch": "EACCES", "rename_scratch": "EACCES",
                   "chmod_scratch": "EPERM"}, got
    assert [ln for ln in emulator.log_lines() if not ln.startswith("GET ")] == []
    assert read_bytes(m.path(*SCHEMA)) == before
    assert read_bytes(m.path(*SWAP)) == b"root's swap"
    # root, the mounter, still saves
    doc = json.loads(before)
    doc["userModified"] = not doc.get("userModified")
    with open(m.path(*SCHEMA), "r+b") as f:
        f.truncate(0)
        f.write(json.dumps(doc).encode())
    assert [ln.split("?")[0] for ln in emulator.log_lines() if not ln.startswith("GET ")] == \
        ["PUT /public/api/projects/SALES/datasets/orders/schema"]
    assert emulator.api_get("projects/SALES/datasets/orders/schema") == doc


# --- what other processes can learn: environment, core dumps, ptrace -------------------------

def _environ(pid) -> bytes:
    with open("/proc/%d/environ" % pid, "rb") as f:
        return f.read()


def _core_limit(pid) -> list[str]:
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4:6]
    raise AssertionError("no core limit in /proc/%d/limits" % pid)


# Run without CAP_SYS_PTRACE, as the daemon is: what it can learn of process argv[1].
_PEEK_SCRIPT = r"""
import errno, json, os, sys
pid = sys.argv[1]
out = {}
for name, fn in (("mem", lambda: open("/proc/%s/mem" % pid, "rb").close()),
                 ("cwd", lambda: os.readlink("/proc/%s/cwd" % pid))):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


def _peek_without_cap_sys_ptrace(pid) -> dict:
    """What a process of the same uid and capabilities (all but CAP_SYS_PTRACE, as the
    daemon under NO_PTRACE) may open of the daemon's /proc entries: only what a dumpable
    process lets it."""
    r = subprocess.run(NO_PTRACE + [sys.executable, "-c", _PEEK_SCRIPT, str(pid)],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _assert_keeps_the_key_private(pid, key):
    env = _environ(pid)                            # root may read it
    assert b"DKU_DSS_URL=" in env                  # (the right process)
    assert key.encode() not in env
    assert _core_limit(pid) == ["0", "0"]
    assert _peek_without_cap_sys_ptrace(pid) == {"mem": "EACCES", "cwd": "EACCES"}


needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None,
                                   reason="needs setpriv (util-linux)")


@needs_root
@needs_setpriv
def test_foreground_daemon_keeps_the_key_private(emulator, system_mount):
    """DKU_API_KEY is gone from /proc/PID/environ once read; the process cannot dump core
    and is not dumpable: a process of the same uid and capabilities cannot read its
    memory.  (The daemon runs without CAP_SYS_PTRACE, so that a peer without it is its
    equal, as two processes of a normal user are.)"""
    m = system_mount(emulator, prefix=NO_PTRACE)
    assert len(project_names(m.mnt)) == 3
    _assert_keeps_the_key_private(m.proc.pid, emulator.admin_key)


# --- daemons in the background -----------------------------------------------------------------

def _find_daemon(mountpoint) -> int | None:
    """The pid of the dssfs process whose command line names ``mountpoint``."""
    real = os.path.realpath(dssfs_bin())
    names = {os.fsencode(str(mountpoint)), os.fsencode(os.path.realpath(mountpoint))}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/exe" % d) != real:
                continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if names & set(args):
            return int(d)
    return None


def _gone(pid, timeout) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


def _mount_ns(pid) -> str:
    return os.readlink("/proc/%d/ns/mnt" % pid)


def _in_namespace_of(pid, argv, **kw):
    """Runs argv in the mount namespace of process pid."""
    return subprocess.run(["nsenter", "--target", str(pid), "--mount", "--"] + list(argv),
                          capture_output=True, text=True, timeout=HANG_GUARD, **kw)


def _unmount_in_namespace_of(pid, mp) -> list[str]:
    r = _in_namespace_of(pid, ["umount", mp])
    if r.returncode == 0:
        return []
    _in_namespace_of(pid, ["umount", "--lazy", mp])
    return ["umount %s failed (%s); lazy unmount used" % (mp, r.stderr.strip())]


@pytest.fixture
def background_mounts(emulator_factory):
    """A list to add the mount points of daemons that went to the background to (dssfs
    without -f, mount(8)): each is unmounted at the end, and its daemon waited for, or
    ended by its pid."""
    mps = []
    yield mps
    problems = []
    for mp in reversed(mps):
        for _ in range(3):           # (a failed test may have mounted a line twice)
            pid = _find_daemon(mp)
            if pid and _mount_ns(pid) != _mount_ns(os.getpid()):
                problems += _unmount_in_namespace_of(pid, mp)
            else:
                problems += unmount(mp)
            if pid is None:
                break
            if not _gone(pid, STOP_TIMEOUT):
                problems.append("dssfs (pid %d) did not exit after the unmount" % pid)
                os.kill(pid, signal.SIGTERM)
                if not _gone(pid, STOP_TIMEOUT):
                    os.kill(pid, signal.SIGKILL)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _new_mountpoint(tmp_path, name="bg") -> str:
    mp = tmp_path / name / "mnt"
    mp.mkdir(parents=True)
    return str(mp)


@needs_root
@needs_setpriv
def test_daemonized_process_keeps_the_key_private(emulator, background_mounts, home,
                                                  tmp_path):
    """The same after fuse_daemonize's fork, in the process that stays."""
    mp = _new_mountpoint(tmp_path)
    background_mounts.append(mp)
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": emulator.admin_key})
    r = subprocess.run(NO_PTRACE + [str(dssfs_bin()), mp], env=env, capture_output=True,
                       text=True, timeout=HANG_GUARD)
    assert r.returncode == 0 and is_mounted(mp), r.stderr
    pid = _find_daemon(mp)
    assert pid is not None
    assert len(project_names(mp)) == 3
    _assert_keeps_the_key_private(pid, emulator.admin_key)


# --- mount(8) and /etc/fstab --------------------------------------------------------------------

needs_mount8 = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mount", "umount", "unshare", "nsenter"))
    or not os.path.exists("/sbin/mount.fuse3"),
    reason="needs util-linux mount, unshare, nsenter and fuse3's mount.fuse3")


def _mount8(args, tmp_path, env):
    """Runs util-linux ``mount ARGS`` as an administrator would, in a new mount namespace
    where the binary under test is /usr/local/sbin/dssfs: mount(8) clears PATH, so
    mount.fuse3's shell finds ``dssfs`` only in the default PATH (where `cmake --install`
    puts it).  The mount stays in that namespace; returns (exit status, stderr)."""
    bindir = tmp_path / "sbin"
    if not bindir.exists():
        bindir.mkdir()
        (bindir / "dssfs").symlink_to(os.path.realpath(dssfs_bin()))
    script = 'mount --bind "$1" /usr/local/sbin && shift && exec mount "$@"'
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                        "sh", "-c", script, "sh", str(bindir)] + list(args),
                       env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    return r.returncode, r.stderr


def _mount_entry_in(pid, mp) -> list[str] | None:
    with open("/proc/%d/mounts" % pid) as f:
        found = [ln.split() for ln in f if ln.split()[1:2] == [mp]]
    return found[-1] if found else None


def _key_file(tmp_path, key) -> str:
    kf = tmp_path / "dss.key"
    kf.write_text(key + "\n")
    os.chmod(kf, 0o600)
    return str(kf)


def _check_mounted_by_mount8(pid, mp, emu, fsname, projects):
    """What mount(8) left: the daemon serves the mount in its namespace, the mount table
    names it as fstab does, and files read as DSS has them."""
    assert pid is not None, "no dssfs daemon for %s" % mp
    entry = _mount_entry_in(pid, mp)
    assert entry is not None and entry[0] == fsname and entry[2] == "fuse.dssfs", entry
    r = _in_namespace_of(pid, ["ls", mp])
    assert r.returncode == 0 and [n for n in r.stdout.split() if n != "instance"] == projects, r
    r = _in_namespace_of(pid, ["cat", os.path.join(mp, *SCHEMA)])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == emu.api_get("projects/SALES/datasets/orders/schema")
    return entry[3].split(",")


def _umount8(pid, mp):
    r = _in_namespace_of(pid, ["umount", mp])
    assert r.returncode == 0, r.stderr
    assert _gone(pid, STOP_TIMEOUT), "dssfs did not exit after umount"


@needs_root
@needs_mount8
def test_mount_from_an_fstab_line(emulator, background_mounts, tmp_path, home):
    """`mount -T FSTAB MOUNTPOINT` and `mount -a -T FSTAB` (mount.fuse3 runs `dssfs SOURCE
    MOUNTPOINT -o ...`) with the README's two lines, and a noauto line with the options
    systemd and mount(8) know, which dssfs ignores: each is mounted once (the mount table
    names it as the line does), serves DSS's files, and umount stops its daemon."""
    kf = _key_file(tmp_path, emulator.admin_key)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"dss_instances": {
        "prod": {"url": emulator.url, "api_key": emulator.admin_key}}}))
    os.chmod(cfg, 0o600)
    mps = [_new_mountpoint(tmp_path, "fstab%d" % i) for i in range(3)]
    background_mounts.extend(mps)
    lines = [  # (fstab line, its mount's name, read-only)
        ("dssfs  %s  fuse.dssfs  ro,url=%s,api_key_file=%s,allow_other,_netdev  0 0"
         % (mps[0], emulator.url, kf), "dssfs", True),
        ("prod   %s  fuse.dssfs  ro,config=%s,allow_other,_netdev  0 0" % (mps[1], cfg),
         "prod", True),
        ("dssfs  %s  fuse.dssfs  url=%s/,api_key_file=%s,defaults,_netdev,nofail,noauto,users,"
         "x-systemd.automount,x-systemd.requires=network-online.target,"
         "x-systemd.mount-timeout=30,comment=dss  0 0" % (mps[2], emulator.url, kf),
         "dssfs", False)]
    fstab = tmp_path / "fstab"
    fstab.write_text("# test fstab\n" + "".join(ln + "\n" for ln, _, _ in lines))
    rc, err = _mount8(["-T", str(fstab), mps[0]], tmp_path, clean_env(home))
    assert rc == 0, err
    ns = _find_daemon(mps[0])        # a process in the namespace of the mounts

    def mounted():
        with open("/proc/%d/mounts" % ns) as f:
            return sorted(ln.split()[1] for ln in f if ln.split()[1] in mps)

    def mount(*args):
        r = _in_namespace_of(ns, ["mount"] + list(args))
        assert r.returncode == 0, r.stderr

    mount("-a", "-T", str(fstab))     # the second line; not the first again, nor noauto
    assert mounted() == mps[:2]
    mount("-T", str(fstab), mps[2])
    mount("-a", "-T", str(fstab))
    assert mounted() == mps
    for mp, (_, fsname, ro) in zip(mps, lines):
        opts = _check_mounted_by_mount8(ns, mp, emulator, fsname,
                                        ["HR_ANALYTICS", "MARKETING", "SALES"])
        assert ("ro" in opts) == ro and "default_permissions" in opts
    for mp in reversed(mps):
        _umount8(_find_daemon(mp), mp)


@needs_root
@needs_mount8
def test_mount_t_fuse_dssfs(emulator, background_mounts, tmp_path, home):
    """`mount -t fuse.dssfs dssfs MOUNTPOINT -o url=...,api_key_file=...`."""
    kf = _key_file(tmp_path, emulator.admin_key)
    mp = _new_mountpoint(tmp_path)
    background_mounts.append(mp)
    rc, err = _mount8(["-t", "fuse.dssfs", "dssfs", mp, "-o",
                       "url=%s,api_key_file=%s,_netdev" % (emulator.url, kf)],
                      tmp_path, clean_env(home))
    assert rc == 0, err
    pid = _find_daemon(mp)
    _check_mounted_by_mount8(pid, mp, emulator, "dssfs", ["HR_ANALYTICS", "MARKETING", "SALES"])
    _umount8(pid, mp)


@needs_root
@needs_mount8
def test_mount_source_names_a_config_instance(emulator_factory, background_mounts, tmp_path,
                                              home):
    """`mount -t fuse.dssfs main MOUNTPOINT -o config=PATH`: SOURCE is the instance (not
    the default one), and the mount table shows it."""
    emu = emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"dss_instances": {
        "main": {"url": emu.url, "api_key": emu.admin_key},
        "limited": {"url": emu.url, "api_key": READER_KEY}}, "default_instance": "limited"}))
    os.chmod(cfg, 0o600)
    mp = _new_mountpoint(tmp_path)
    background_mounts.append(mp)
    rc, err = _mount8(["-t", "fuse.dssfs", "main", mp, "-o", "config=%s" % cfg], tmp_path,
                      clean_env(home))
    assert rc == 0, err
    pid = _find_daemon(mp)
    _check_mounted_by_mount8(pid, mp, emu, "main", ["HR_ANALYTICS", "MARKETING", "SALES"])
    _umount8(pid, mp)
