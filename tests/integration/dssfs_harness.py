"""Harness of the dssfs integration tests: the DSS emulator and real dssfs mounts.

Everything here runs real processes: ``tests/emulator/dss_emulator.py`` on a loopback
port and the ``dssfs`` binary (env ``DSSFS_BIN``, default ``<repo>/build/dssfs``) mounted
in the foreground.  Processes are only ever stopped by their own PID, and every mount is
undone in a finalizer (``fusermount3 -u``, retried, then ``-uz``).

Python standard library only; imported by conftest.py and by the test modules.
"""

from __future__ import annotations

import base64
import collections
import errno
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMULATOR = REPO / "tests" / "emulator" / "dss_emulator.py"
DEMO = REPO / "tests" / "emulator" / "demo"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Distinctive keys, so that a test can look for them in any output.
ADMIN_KEY = "itAdminKey-7f3c9b2e51d84a06"
READER_KEY = "itReaderKey-2b8e4d1c07a95f33"

START_TIMEOUT = 20.0   # emulator / mount start (generous: the suite also runs under ASan)
STOP_TIMEOUT = 10.0

# What the daemon's stderr must never contain.
SANITIZER_PATTERNS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                      "ThreadSanitizer", "MemorySanitizer")
ERROR_LINE = re.compile(r"^dssfs: error:", re.M)


def dssfs_bin() -> Path:
    return Path(os.environ.get("DSSFS_BIN") or REPO / "build" / "dssfs")


def dssfs_sanitized() -> bool:
    """Whether the binary under test runs under a sanitizer's allocator (its memory
    figures then say nothing about dssfs's own bounds)."""
    if dssfs_has_asan():
        return True
    try:
        with open(dssfs_bin(), "rb") as f:
            return b"__tsan_init" in f.read()
    except OSError:
        return False


def dssfs_has_asan() -> bool:
    """Whether the binary under test was built with AddressSanitizer."""
    try:
        with open(dssfs_bin(), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def fixtures_dir() -> Path | None:
    """The real DSS project trees (never copied into the repo), or None."""
    env = os.environ.get("DSSFS_FIXTURES")
    cand = Path(env) if env else REPO.parent / "shared" / "fixtures" / "dss-projects"
    if cand.is_dir() and any((p / "params.json").exists() for p in cand.iterdir()):
        return cand
    return None


# ---------------------------------------------------------------------------------------
# Names: a copy of include/dssfs/escape.h, to compute what the mount must list
# ---------------------------------------------------------------------------------------

def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _cut_point(e: bytes, limit: int) -> int:
    i = last = 0
    while i < len(e):
        c = e[i]
        step = 3 if c == 0x25 else 4 if c >= 0xF0 else 3 if c >= 0xE0 else 2 if c >= 0xC0 else 1
        if i + step > limit or i + step > len(e):
            break
        i += step
        last = i
    return last


def escape_name(name: str) -> str:
    """The file name dssfs shows for DSS object ``name`` (see escape.h)."""
    if name == ".":
        return "%2E"
    if name == "..":
        return "%2E%2E"
    raw = name.encode("utf-8")
    e = raw.replace(b"%", b"%25").replace(b"/", b"%2F")
    if len(e) > 255:
        e = e[:_cut_point(e, 200)] + b"%%~%016x" % fnv1a64(raw)
    return e.decode("utf-8")


def api_path(*segments: str, trailing_slash: bool = False) -> str:
    """``projects/<K>/datasets/<N>`` with each segment percent-encoded."""
    out = "/".join(urllib.parse.quote(s, safe="") for s in segments)
    return out + "/" if trailing_slash else out


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------

def stop_process(proc: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> None:
    """Ends one process we started: waits, then SIGTERM, then SIGKILL (by its PID)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.wait(timeout=0.2)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _unescape_mounts_field(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mount_entry(mountpoint: str | os.PathLike) -> list[str] | None:
    """The /proc/mounts fields of ``mountpoint`` (last one wins), or None."""
    mp = os.path.realpath(mountpoint)
    found = None
    with open("/proc/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and _unescape_mounts_field(fields[1]) == mp:
                found = fields
    return found


def is_mounted(mountpoint) -> bool:
    return mount_entry(mountpoint) is not None


def unmount(mountpoint) -> list[str]:
    """``fusermount3 -u`` (retried), then ``-uz``.  Returns what went wrong."""
    problems = []
    if not is_mounted(mountpoint):
        return problems
    last = ""
    for attempt in range(6):
        try:
            r = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True,
                               text=True, timeout=15)
            last = (r.stderr or "").strip()
        except subprocess.TimeoutExpired:
            last = "fusermount3 -u timed out"
        if not is_mounted(mountpoint):
            return problems
        time.sleep(0.1 * (attempt + 1))
    problems.append("fusermount3 -u %s failed (%s); lazy unmount used" % (mountpoint, last))
    subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, timeout=15)
    return problems


# ---------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------

class ApiError(AssertionError):
    pass


# The emulator runs in its workdir: a relative file lands there (Emulator.control_port()).
CONTROL_PORT_FILE = "emulator.control-port"
CONTROL_PORT_ARGS = ("--control-port-file", CONTROL_PORT_FILE)


class Emulator:
    """One dss_emulator.py process on 127.0.0.1 (``--port 0``)."""

    def __init__(self, workdir: Path, args=(), admin_key: str = ADMIN_KEY, users=()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.admin_key = admin_key
        self.users = list(users)        # "KEY:LOGIN:RULES"
        self.port_file = self.workdir / "emulator.port"
        self.log_path = self.workdir / "emulator-requests.log"
        self.stderr_path = self.workdir / "emulator.stderr"
        self.proc: subprocess.Popen | None = None
        self.port = None
        self._log_offset = 0

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> "Emulator":
        for p in (self.port_file, self.log_path):
            if p.exists():
                p.unlink()
        cmd = [PYTHON, str(EMULATOR), "--host", "127.0.0.1", "--port", "0",
               "--port-file", str(self.port_file), "--log-requests", str(self.log_path)]
        if self.admin_key:
            cmd += ["--api-key", self.admin_key]
        for u in self.users:
            cmd += ["--user", u]
        cmd += self.args
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=self._stderr, cwd=str(self.workdir))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("the emulator exited with %s:\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            if self.port_file.exists():
                text = self.port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    return self
            time.sleep(0.02)
        self.stop()
        raise AssertionError("the emulator did not start in %.0f s:\n%s"
                             % (START_TIMEOUT, self.stderr_text()))

    def stop(self) -> None:
        stop_process(self.proc)
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    # --- HTTP -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, key: str | None = None,
                timeout: float = 30.0):
        """(status, body bytes).  ``path`` is absolute (``/public/api/...``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Accept": "application/json"}
            if key is not None:
                token = base64.b64encode(("%s:" % key).encode()).decode()
                headers["Authorization"] = "Basic " + token
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def api_get_raw(self, rel: str, key: str | None = None):
        """GET /public/api/<rel> with Basic auth; (status, bytes).  Counts as a request."""
        return self.request("GET", "/public/api/" + rel, key=key or self.admin_key)

    def api_get(self, rel: str, key: str | None = None):
        """The parsed JSON of GET /public/api/<rel> (must answer 200)."""
        status, data = self.api_get_raw(rel, key)
        if status != 200:
            raise ApiError("GET %s: HTTP %d %s" % (rel, status, data[:300]))
        return json.loads(data)

    def control(self, method: str, what: str, body=None):
        status, data = self.request(method, "/__emulator__/" + what, body=body)
        if status != 200:
            raise AssertionError("%s /__emulator__/%s: HTTP %d %s"
                                 % (method, what, status, data[:300]))
        return json.loads(data) if data else None

    # --- stats, log, faults ---------------------------------------------------------------

    def stats(self) -> dict:
        return self.control("GET", "stats")

    def request_count(self) -> int:
        """API requests answered since the last reset_stats()."""
        return self.stats()["requests"]

    def reset_stats(self) -> None:
        """Zeroes the counters and starts a new window of log_lines()."""
        self.control("POST", "reset-stats")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_lines(self, since_reset: bool = True) -> list[str]:
        """``METHOD PATH?query`` lines of the request log (since reset_stats())."""
        if not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as f:
            if since_reset:
                f.seek(self._log_offset)
            data = f.read()
        return [ln for ln in data.decode("utf-8", "replace").splitlines() if ln]

    def add_fault(self, **spec) -> int:
        return self.control("POST", "faults", body=spec)["id"]

    def clear_faults(self) -> None:
        self.control("DELETE", "faults")

    # --- fault rates, pause / resume (start with args=CONTROL_PORT_ARGS to pause) ----------

    def control_port(self) -> int | None:
        """The port of the emulator's control-only listener, or None if it has none."""
        p = self.workdir / CONTROL_PORT_FILE
        return int(p.read_text()) if p.exists() else None

    def control_always(self, method: str, what: str, body=None):
        """Like control(), through the control port when there is one, so that it also
        works while the emulator is paused."""
        port = self.control_port()
        if port is None:
            return self.control(method, what, body)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, "/__emulator__/" + what, body=data)
            resp = conn.getresponse()
            status, out = resp.status, resp.read()
        finally:
            conn.close()
        if status != 200:
            raise AssertionError("%s /__emulator__/%s (control port): HTTP %d %s"
                                 % (method, what, status, out[:300]))
        return json.loads(out) if out else None

    def set_fault_rates(self, rates: dict, **options) -> dict:
        """Random faults from now on: ``rates`` maps kinds ("500", "503", "reset",
        "stall", "truncate", "badjson", "drip", "garbage") to probabilities; options:
        seed, methods, path_prefix, retry_after, stall_s, drip_bytes, drip_interval_ms,
        garbage_text (see tests/emulator/README.md).  Replaces the previous rates."""
        body = {str(k): v for k, v in rates.items()}
        body.update(options)
        return self.control_always("POST", "fault-rates", body)

    def clear_fault_rates(self) -> None:
        self.control_always("DELETE", "fault-rates")

    def fault_stats(self) -> dict:
        """How many faults of each kind were injected since the last reset_stats()."""
        return self.control_always("GET", "stats")["faults"]

    def pause(self) -> None:
        """DSS goes down: the API port stops listening (ECONNREFUSED) and its open
        connections are closed.  Needs args=CONTROL_PORT_ARGS."""
        if self.control_port() is None:
            raise AssertionError("start the emulator with args=CONTROL_PORT_ARGS to pause it")
        self.control_always("POST", "pause")

    def resume(self) -> None:
        """DSS is back, on the same port."""
        self.control_always("POST", "resume")


# ---------------------------------------------------------------------------------------
# dssfs
# ---------------------------------------------------------------------------------------

def clean_env(home: Path, extra: dict | None = None) -> dict:
    """The environment of a dssfs process: ours without any DKU_*, HOME redirected."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKU_")}
    env["HOME"] = str(home)
    # dssfs's times file (README, "Times") goes under this HOME, one per test
    env.pop("XDG_CACHE_HOME", None)
    env.pop("CACHE_DIRECTORY", None)
    env.setdefault("LC_ALL", "C.UTF-8")
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


class Mount:
    """One dssfs process mounted in the foreground (``-f``), stderr to a file."""

    def __init__(self, workdir: Path, options=(), env=None, args=(), expect_errors=False,
                 debug=False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mountpoint = self.workdir / "mnt"
        self.mountpoint.mkdir(exist_ok=True)
        self.stderr_path = self.workdir / "dssfs.stderr"
        self.stdout_path = self.workdir / "dssfs.stdout"
        self.options = list(options)
        self.env = env
        self.args = list(args)
        self.expect_errors = expect_errors
        self.debug = debug
        self.proc: subprocess.Popen | None = None
        self.finished = False
        self.returncode = None
        self.check_exit_status = True   # a test that stops dssfs itself may turn it off

    @property
    def mnt(self) -> str:
        return str(self.mountpoint)

    def path(self, *parts: str) -> str:
        return os.path.join(self.mnt, *parts)

    def command(self) -> list[str]:
        cmd = [str(dssfs_bin()), "-f"]
        if self.debug:
            cmd.append("-d")
        if self.options:
            cmd += ["-o", ",".join(self.options)]
        cmd += self.args
        cmd.append(self.mnt)
        return cmd

    def start(self) -> "Mount":
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=self.env, cwd=str(self.workdir))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if is_mounted(self.mountpoint):
                return self
            if self.proc.poll() is not None:
                self.finished = True
                self.returncode = self.proc.returncode
                raise AssertionError("dssfs exited with %s before mounting; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            time.sleep(0.02)
        raise AssertionError("dssfs did not mount %s within %.0f s; stderr:\n%s"
                             % (self.mnt, START_TIMEOUT, self.stderr_text()))

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except OSError:
            return ""

    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr_text().splitlines() if ERROR_LINE.match(ln)]

    def sighup(self, timeout: float = 10.0) -> None:
        """SIGHUP the daemon and wait until it says it dropped its caches."""
        marker = "SIGHUP: dropped all cached objects"
        before = self.stderr_text().count(marker)
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr_text().count(marker) > before:
                return
            time.sleep(0.01)
        raise AssertionError("dssfs did not log %r after SIGHUP; stderr:\n%s"
                             % (marker, self.stderr_text()))

    def settle(self, rounds: int = 3) -> None:
        """Lets the daemon answer what the kernel still has queued for it.

        close() returns before the kernel sends RELEASE (it is a background request);
        an unmount right after a burst of closes would abort those.  A few synchronous
        round trips (statfs) let them through first.  Not a time assertion."""
        for _ in range(rounds):
            if self.proc is None or self.proc.poll() is not None or not is_mounted(self.mnt):
                return
            try:
                os.statvfs(self.mnt)
            except OSError:
                return
            time.sleep(0.01)

    def finish(self) -> list[str]:
        """Unmounts, ends the process, and checks its exit status and stderr."""
        if self.finished:
            return []
        self.finished = True
        problems = []
        self.settle()
        try:
            problems += unmount(self.mountpoint)
        except Exception as e:  # keep cleaning up
            problems.append("unmount of %s raised %r" % (self.mnt, e))
            subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append("dssfs (pid %d) did not exit within %.0f s of the unmount"
                                % (self.proc.pid, STOP_TIMEOUT))
                stop_process(self.proc)
            self.returncode = self.proc.returncode
            if self.returncode != 0 and self.check_exit_status:
                problems.append("dssfs exited with status %s after the unmount"
                                % self.returncode)
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()
        problems += self.check_output()
        if problems:
            problems.append("--- dssfs stderr (%s) ---\n%s"
                            % (self.stderr_path, self.stderr_text()[-20000:]))
        return problems

    def check_output(self) -> list[str]:
        text = self.stderr_text() + self.stdout_text()
        problems = []
        for pat in SANITIZER_PATTERNS:
            if pat in text:
                problems.append("dssfs output contains %r" % pat)
        for key in (ADMIN_KEY, READER_KEY):
            if key in text or base64.b64encode(("%s:" % key).encode()).decode() in text:
                problems.append("dssfs output contains an API key (%s...)" % key[:6])
        if not self.expect_errors:
            errs = self.error_lines()
            if errs:
                problems.append("unexpected error lines from dssfs (mark the test with "
                                "@pytest.mark.expect_dssfs_errors if they are expected):\n  "
                                + "\n  ".join(errs[:20]))
        return problems


def run_dssfs(argv, env, mountpoint=None, timeout: float = 30.0):
    """Runs dssfs expecting it to exit by itself (refusals, --help ...).

    Returns (returncode, stdout, stderr).  If it mounted instead, it is unmounted and
    stopped, and an AssertionError says so."""
    proc = subprocess.Popen([str(dssfs_bin())] + list(argv), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        problems = unmount(mountpoint) if mountpoint else []
        stop_process(proc)
        out, err = proc.communicate()
        raise AssertionError("dssfs %s did not exit within %.0f s %s\nstderr:\n%s"
                             % (argv, timeout, problems, err.decode(errors="replace")))
    finally:
        if mountpoint and is_mounted(mountpoint):
            unmount(mountpoint)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# ---------------------------------------------------------------------------------------
# What the mount must show, computed from the API (the rows of src/pathtab.c)
# ---------------------------------------------------------------------------------------

PAYLOAD_EXT = {"python": "py", "pyspark": "py", "r": "R", "sparkr": "R", "sql_query": "sql",
               "sql_script": "sql", "spark_sql_query": "sql", "hive": "sql", "impala": "sql",
               "spark_scala": "scala", "shell": "sh", "julia": "jl"}

PROJECT_ENTRIES = {"metadata.json", "settings.json", "permissions.json", "variables.json",
                   "datasets", "recipes", "scenarios"}
DATASET_FILES = {"settings.json", "schema.json", "metadata.json", "partitions.json",
                 "metrics.json"}
READ_ONLY_FILES = {"partitions.json", "metrics.json", "last-runs.json"}


def payload_ext(recipe_type) -> str:
    return PAYLOAD_EXT.get(recipe_type, "json")


def _ms(tag_holder, default=None):
    try:
        v = tag_holder["versionTag"]["lastModifiedOn"]
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
    except (KeyError, TypeError):
        return default


class ExpectedFile:
    __slots__ = ("kind", "value", "mtime_ms", "endpoint", "writable")

    def __init__(self, kind, value, mtime_ms, endpoint, writable):
        self.kind = kind          # "json" or "text"
        self.value = value        # parsed JSON, or the text
        self.mtime_ms = mtime_ms  # None: not checked (mount time)
        self.endpoint = endpoint
        self.writable = writable


class ExpectedTree:
    """Directories (relpath -> set of entry names, mtime ms) and files of the mount."""

    def __init__(self):
        self.dirs: dict[str, tuple[set, int | None]] = {}
        self.files: dict[str, ExpectedFile] = {}
        self.links: dict[str, str] = {}    # relpath -> target (relative)
        self.resources: set[str] = set()   # every endpoint a full walk GETs
        # fetched at mount (the admin probe): a cold walk right after it does not ask again
        self.at_mount: set[str] = set()

    def walked(self) -> set[str]:
        """What a cold walk of a fresh mount GETs: the resources but those of the mount."""
        return self.resources - self.at_mount


def expected_tree(emu: Emulator, key: str | None = None) -> ExpectedTree:
    """Walks the API like dssfs should, with direct GETs (they count as requests)."""
    t = ExpectedTree()
    get = lambda rel: emu.api_get(rel, key)  # noqa: E731

    def raw(rel):
        status, data = emu.api_get_raw(rel, key)
        if status != 200:
            raise ApiError("GET %s: HTTP %d %s" % (rel, status, data[:300]))
        return data

    def add_file(rel, kind, value, mtime, endpoint, writable=True):
        t.files[rel] = ExpectedFile(kind, value, mtime, endpoint, writable)
        t.resources.add(endpoint)

    projects = get("projects/")
    t.dirs[""] = ({escape_name(p["projectKey"]) for p in projects}, None)
    for p in projects:
        K = p["projectKey"]
        pd = escape_name(K)
        pm = _ms(p)
        t.dirs[pd] = (set(PROJECT_ENTRIES), pm)
        for fname, ep in (("metadata.json", api_path("projects", K, "metadata")),
                          ("settings.json", api_path("projects", K, "settings")),
                          ("permissions.json", api_path("projects", K, "permissions")),
                          ("variables.json", api_path("projects", K, "variables",
                                                      trailing_slash=True))):
            if fname == "permissions.json" and emu.api_get_raw(ep, key)[0] == 403:
                # a key without admin rights on the project: not shown (pathtab.h,
                # hide_forbidden), asked once to know
                t.dirs[pd][0].discard(fname)
                t.resources.add(ep)
                continue
            add_file(pd + "/" + fname, "json", get(ep), pm, ep)

        ep = api_path("projects", K, "datasets", trailing_slash=True)
        datasets = get(ep)
        t.resources.add(ep)
        t.dirs[pd + "/datasets"] = ({escape_name(d["name"]) for d in datasets}, pm)
        for d in datasets:
            N = d["name"]
            dd = pd + "/datasets/" + escape_name(N)
            dm = _ms(d, pm)
            t.dirs[dd] = (set(DATASET_FILES), dm)
            base = ("projects", K, "datasets", N)
            doc = get(api_path(*base))
            add_file(dd + "/settings.json", "json", doc, _ms(doc, dm), api_path(*base))
            for fname, tail in (("schema.json", ("schema",)), ("metadata.json", ("metadata",)),
                                ("partitions.json", ("partitions",)),
                                ("metrics.json", ("metrics", "last", "NP"))):
                e = api_path(*base, *tail)
                add_file(dd + "/" + fname, "json", get(e), dm, e,
                         writable=fname not in READ_ONLY_FILES)

        ep = api_path("projects", K, "recipes", trailing_slash=True)
        recipes = get(ep)
        t.resources.add(ep)
        t.dirs[pd + "/recipes"] = ({escape_name(r["name"]) for r in recipes}, pm)
        for r in recipes:
            N = r["name"]
            rd = pd + "/recipes/" + escape_name(N)
            e = api_path("projects", K, "recipes", N)
            doc = get(e)
            ext = payload_ext(doc["recipe"].get("type"))
            t.dirs[rd] = ({"recipe.json", "payload." + ext}, _ms(r, pm))
            rm = _ms(doc["recipe"], _ms(r, pm))
            add_file(rd + "/recipe.json", "json", doc["recipe"], rm, e)
            payload = doc.get("payload")
            add_file(rd + "/payload." + ext, "text", payload if payload is not None else "",
                     rm, e)

        ep = api_path("projects", K, "scenarios", trailing_slash=True)
        scenarios = get(ep)
        t.resources.add(ep)
        t.dirs[pd + "/scenarios"] = ({escape_name(s["id"]) for s in scenarios}, pm)
        for s in scenarios:
            S = s["id"]
            sd = pd + "/scenarios/" + escape_name(S)
            sm = _ms(s, pm)
            e = api_path("projects", K, "scenarios", S)
            doc = get(e)
            entries = {"settings.json"}  # last-runs.json: activity, not listed
            add_file(sd + "/settings.json", "json", doc, _ms(doc, sm), e)
            if doc.get("type") == "custom_python":
                entries.add("script.py")
                pe = api_path("projects", K, "scenarios", S, "payload")
                add_file(sd + "/script.py", "text", get(pe).get("script") or "", sm, pe)
            t.dirs[sd] = (entries, sm)
        _expect_more_types(t, get, K, pd, pm, add_file, raw)
    _expect_instance(t, emu, key, get, add_file, raw)
    return t


INSTANCE_DIR = "instance"


def project_names(path) -> list[str]:
    """The project folders at a mount's root: its entries but instance/."""
    return sorted(n for n in os.listdir(path) if n != INSTANCE_DIR)


def is_admin_key(emu: Emulator, key: str | None = None) -> bool:
    """What dssfs's probe at mount finds (GET admin/variables/ answers)."""
    return emu.api_get_raw("admin/variables/", key)[0] == 200


# instance/'s object folders for an admin key: folder, list endpoint, id and name fields,
# endpoint of one object ("{id}")
INSTANCE_FOLDERS = (
    ("users", "admin/users/", "login", None, "admin/users/{id}"),
    ("groups", "admin/groups/", "name", None, "admin/groups/{id}"),
    ("connections", "admin/connections/", "name", None, "admin/connections/{id}"),
    ("clusters", "admin/clusters/", "id", "name", "admin/clusters/{id}"),
    ("meanings", "meanings/", "id", None, "meanings/{id}"),
)


def _expect_instance(t, emu, key, get, add_file, raw):
    """instance/: info.json for any key; the admin objects for an admin key, with each
    plugin in development's files (files/: its contents tree, each file's raw bytes)."""
    t.dirs[""][0].add(INSTANCE_DIR)
    entries = {"info.json"}
    t.dirs[INSTANCE_DIR] = (entries, None)
    add_file(INSTANCE_DIR + "/info.json", "json", get("instance-info"), None, "instance-info",
             writable=False)
    admin = is_admin_key(emu, key)
    entries.add("project-folders")
    _expect_project_folders(t, get, admin, add_file, "project-folders/ROOT",
                            INSTANCE_DIR + "/project-folders")
    if not admin:
        return
    entries |= {"general-settings.json", "variables.json", "plugins"}
    for fname, ep in (("general-settings.json", "admin/general-settings"),
                      ("variables.json", "admin/variables/")):
        add_file(INSTANCE_DIR + "/" + fname, "json", get(ep), None, ep)
    t.at_mount.add("admin/variables/")
    for folder, ep, id_key, name_key, one in INSTANCE_FOLDERS:
        items = get(ep)
        if isinstance(items, dict):   # connections: an object keyed by name
            items = [dict(v, **{id_key: k}) for k, v in items.items()]
        t.resources.add(ep)
        entries.add(folder)
        d = INSTANCE_DIR + "/" + folder
        t.dirs[d] = (set(), None)
        for it, name in listed_names(items, id_key, name_key):
            e = one.replace("{id}", urllib.parse.quote(it[id_key], safe=""))
            t.dirs[d][0].add(name + ".json")
            add_file(d + "/" + name + ".json", "json", get(e), None, e)
    # code-envs/python and code-envs/r: one list of every env, shown by language
    envs = get("admin/code-envs/")
    t.resources.add("admin/code-envs/")
    entries.add("code-envs")
    t.dirs[INSTANCE_DIR + "/code-envs"] = ({"python", "r"}, None)
    for lang in ("PYTHON", "R"):
        d = INSTANCE_DIR + "/code-envs/" + lang.lower()
        t.dirs[d] = (set(), None)
        mine = [it for it in envs if it.get("envLang") == lang]
        for it, name in listed_names(mine, "envName", None):
            e = "admin/code-envs/%s/%s" % (lang, urllib.parse.quote(it["envName"], safe=""))
            t.dirs[d][0].add(name + ".json")
            add_file(d + "/" + name + ".json", "json", get(e), None, e)
    plugins = get("plugins/")
    t.resources.add("plugins/")
    t.dirs[INSTANCE_DIR + "/plugins"] = ({escape_name(p["id"]) for p in plugins}, None)
    for p in plugins:
        d = INSTANCE_DIR + "/plugins/" + escape_name(p["id"])
        e = api_path("plugins", p["id"], "settings")
        t.dirs[d] = ({"settings.json"}, None)
        add_file(d + "/settings.json", "json", get(e), None, e)
        if p.get("isDev") is True:
            t.dirs[d][0].add("files")
            _expect_plugin_files(t, get, raw, add_file, p["id"], d + "/files")


def _expect_plugin_files(t, get, raw, add_file, pid, root):
    ep = api_path("plugins", pid, "contents")
    t.resources.add(ep)

    def level(nodes, rel, up_path):
        entries = set()
        for n in nodes:
            entries.add(n["name"])
            path = up_path + [n["name"]]
            when = _int_or(n.get("lastModified"), None)
            if "children" in n:
                level(n["children"], rel + "/" + n["name"], path)
                t.dirs[rel + "/" + n["name"]] = (t.dirs[rel + "/" + n["name"]][0], when)
            else:
                fe = api_path("plugins", pid, "contents", *path)
                add_file(rel + "/" + n["name"], "bytes", raw(fe), when, fe)
        t.dirs[rel] = (entries, None)

    level(get(ep), root, [])


def _expect_project_folders(t, get, admin, add_file, ep, d):
    """instance/project-folders/...: the folder of document `ep` at d, its sub-folders
    named by their own documents (settings.json for an admin) and its projects as links
    to the projects' folders, relative to the link's folder."""
    doc = get(ep)
    t.resources.add(ep)
    eps = {cid: api_path("project-folders", cid) for cid in doc["childrenIds"]}
    subs = listed_names([get(e) for e in eps.values()], "id", "name")
    up = "../" * (d.count("/") + 1)
    links = {escape_name(k): up + escape_name(k) for k in doc["projectKeys"]}
    t.dirs[d] = ({name for _, name in subs} | set(links), None)
    t.links.update({d + "/" + n: target for n, target in links.items()})
    for sub, name in subs:
        sd = d + "/" + name
        _expect_project_folders(t, get, admin, add_file, eps[sub["id"]], sd)
        if admin:
            se = api_path("project-folders", sub["id"], "settings")
            t.dirs[sd][0].add("settings.json")
            add_file(sd + "/settings.json", "json", get(se), None, se)


# The object types added with the whole project (issue 8), as the API serves them
# (dss-rest-api-more.md).  Each: the folder, its list endpoint under projects/<K>/, where
# the items are in the list's document, the item's id and name fields, and either `doc`
# (one file <name><suffix> per object: its endpoint and whether it is saved) or `files`
# (a folder per object: file name, endpoint, field, kind, writable, condition on the
# object's document (field, accepted values)).  Ids fill "{id}"; "{up}" is the enclosing
# object's id.
_WEBAPP = "webapps/{id}"
MORE_TYPES = (
    dict(folder="managed_folders", list="managedfolders/", id="id", name="name",
         files=(("settings.json", "managedfolders/{id}", None, "json", True, None),)),
    dict(folder="notebooks", list="jupyter-notebooks/", id="name", name=None,
         suffix=".ipynb", doc=("jupyter-notebooks/{id}", True)),
    dict(folder="sql_notebooks", list="sql-notebooks/", id="id", name="name",
         files=(("settings.json", "sql-notebooks/{id}", None, "json", True, None),
                ("history.json", "sql-notebooks/{id}/history", None, "json", False, None))),
    dict(folder="webapps", list="webapps/", id="id", name="name",
         files=(("settings.json", _WEBAPP, None, "json", True, None),
                ("body.html", _WEBAPP, "html", "text", True, ("type", {"STANDARD"})),
                ("app.js", _WEBAPP, "js", "text", True, ("type", {"STANDARD"})),
                ("style.css", _WEBAPP, "css", "text", True, ("type", {"STANDARD"})),
                ("backend.py", _WEBAPP, "python", "text", True,
                 ("type", {"STANDARD", "BOKEH", "DASH"})),
                ("ui.R", _WEBAPP, "ui", "text", True, ("type", {"SHINY"})),
                ("server.R", _WEBAPP, "server", "text", True, ("type", {"SHINY"})))),
    dict(folder="dashboards", list="dashboards/", id="id", name="name", suffix=".json",
         doc=("dashboards/{id}/", True)),
    dict(folder="insights", list="insights/", id="id", name="name", suffix=".json",
         doc=("insights/{id}/", True)),
    dict(folder="zones", list="flow/zones", id="id", name="name", suffix=".json",
         doc=("flow/zones/{id}", True)),
    dict(folder="saved_models", list="savedmodels/", id="id", name="name",
         files=(("settings.json", "savedmodels/{id}", None, "json", True, None),
                ("versions.json", "savedmodels/{id}/versions", None, "json", False, None))),
    dict(folder="model_evaluation_stores", list="evaluationstores/", id="id", name="name",
         files=(("settings.json", "evaluationstores/{id}", None, "json", True, None),
                ("evaluations.json", "evaluationstores/{id}/evaluations/", None, "json",
                 False, None))),
    dict(folder="analyses", list="lab/", id="analysisId", name="name",
         files=(("settings.json", "lab/{id}/", None, "json", True, None),),
         sub=dict(folder="ml_tasks", list="lab/{id}/models/", at="mlTasks", id="mlTaskId",
                  name=None,
                  files=(("settings.json", "models/lab/{up}/{id}/settings", None, "json",
                          True, None),))),
    dict(folder="api_services", list="apiservices/", id="id", name=None,
         files=(("settings.json", "apiservices/{id}/settings", None, "json", True, None),)),
    dict(folder="model_comparisons", list="evaluationcomparisons/", id="id", name="displayName",
         suffix=".json", doc=("evaluationcomparisons/{id}", True)),
    dict(folder="code_studios", list="code-studios/", id="id", name="name", suffix=".json",
         doc=("code-studios/{id}", False)),
    dict(folder="knowledge_banks", list="knowledge-banks", id="id", name="name",
         suffix=".json", doc=("knowledge-banks/{id}", True)),
    dict(folder="agent_tools", list="agents/tools", at="tools", id="id", name="name",
         suffix=".json", doc=("agents/tools/{id}", True)),
)


def listed_names(items, id_key, name_key):
    """(item, file name without suffix) as dssfs names the objects of a listing: by name
    (its id if it has none); objects sharing a name are each "<name>~<id>"."""
    def name_of(it):
        n = it.get(name_key) if name_key else None
        return n if isinstance(n, str) and n else it[id_key]
    counts = collections.Counter(name_of(it) for it in items)
    return [(it, escape_name(name_of(it) + ("~" + it[id_key] if counts[name_of(it)] > 1
                                            else ""))) for it in items]


def _expect_more_types(t, get, K, pd, pm, add_file, raw):
    t.dirs[pd][0].add("tags.json")
    ep = api_path("projects", K, "tags")
    add_file(pd + "/tags.json", "json", get(ep), pm, ep)

    def ep_of(tmpl, **ids):
        segs = ["projects", K] + [seg.format(**ids) for seg in tmpl.rstrip("/").split("/")]
        return api_path(*segs, trailing_slash=tmpl.endswith("/"))

    def walk(ty, folder_rel, folder_ms, up=None):
        lep = ep_of(ty["list"], id=up or "")
        t.resources.add(lep)     # dssfs asks even where it finds no such type
        try:
            listed = get(lep)
        except ApiError as e:
            if "HTTP 404" in str(e):
                return False     # an object type this DSS lacks: no folder
            raise
        if ty.get("at"):
            listed = listed[ty["at"]]
        names = listed_names(listed, ty["id"], ty.get("name"))
        entries = set()
        for it, base in names:
            oid = it[ty["id"]]
            om = _ms(it, folder_ms)
            if "doc" in ty:
                fname = base + ty["suffix"]
                entries.add(fname)
                e = ep_of(ty["doc"][0], id=oid, up=up or "")
                doc = get(e)
                add_file(folder_rel + "/" + fname, "json", doc, _ms(doc, om), e,
                         writable=ty["doc"][1])
                continue
            entries.add(base)
            od = folder_rel + "/" + base
            files = set()
            docs = {}
            for fname, tmpl, field, kind, writable, cond in ty["files"]:
                e = ep_of(tmpl, id=oid, up=up or "")
                if e not in docs:
                    docs[e] = get(e)
                doc = docs[e]
                if cond and doc.get(cond[0]) not in cond[1]:
                    continue
                files.add(fname)
                value = doc.get("params", {}).get(field) if field else doc
                if kind == "text" and value is None:
                    value = ""
                add_file(od + "/" + fname, kind, value, _ms(doc, om), e, writable=writable)
            if ty.get("sub") and walk(ty["sub"], od + "/" + ty["sub"]["folder"], om, oid):
                files.add(ty["sub"]["folder"])
            t.dirs[od] = (files, om)
        t.dirs[folder_rel] = (entries, folder_ms)
        return True

    for ty in MORE_TYPES:
        if walk(ty, pd + "/" + ty["folder"], pm):
            t.dirs[pd][0].add(ty["folder"])
    _expect_wiki(t, get, K, pd, pm, add_file)
    _expect_file_trees(t, get, K, pd, pm, add_file, raw)
    _expect_worksheets(t, get, K, pd, pm, add_file)


def _expect_worksheets(t, get, K, pd, pm, add_file):
    """statistics_worksheets/: every dataset's worksheets (one list per dataset)."""
    items = []
    for d in get(api_path("projects", K, "datasets", trailing_slash=True)):
        ep = api_path("projects", K, "datasets", d["name"], "statistics", "worksheets",
                      trailing_slash=True)
        t.resources.add(ep)
        try:
            items += [(d["name"], it) for it in get(ep)]
        except ApiError as e:
            if "HTTP 404" not in str(e):
                raise
    t.dirs[pd][0].add("statistics_worksheets")
    named = listed_names([it for _, it in items], "id", "name")
    entries = set()
    for (ds, it), (_, base) in zip(items, named):
        e = api_path("projects", K, "datasets", ds, "statistics", "worksheets", it["id"])
        doc = get(e)
        entries.add(base + ".json")
        add_file(pd + "/statistics_worksheets/" + base + ".json", "json", doc,
                 _ms(doc, _ms(it, pm)), e)
    t.dirs[pd + "/statistics_worksheets"] = (entries, pm)


def _expect_file_trees(t, get, K, pd, pm, add_file, raw):
    """library/ (the library's tree; each file's bytes from its base64 GET) and each managed
    folder's files/ (its flat list; each file's raw bytes)."""
    ep = api_path("projects", K, "libraries", "contents")
    t.resources.add(ep)
    t.dirs[pd][0].add("library")

    def lib_level(nodes, rel, up_path):
        entries = set()
        for n in nodes:
            name = n["name"]
            entries.add(name)
            path = up_path + [name]
            if "children" in n:
                lib_level(n["children"], rel + "/" + name, path)
                t.dirs[rel + "/" + name] = (t.dirs[rel + "/" + name][0],
                                            _int_or(n.get("lastModified"), pm))
            else:
                fe = api_path("projects", K, "libraries", "contents", *path) + \
                    "?dataEncoding=base64"
                data = base64.b64decode(get(fe)["data"])
                add_file(rel + "/" + name, "bytes", data, _int_or(n.get("lastModified"), pm),
                         fe)
        t.dirs[rel] = (entries, pm)

    lib_level(get(ep), pd + "/library", [])
    mfd = pd + "/managed_folders"
    if mfd not in t.dirs:
        return
    for it in get(api_path("projects", K, "managedfolders", trailing_slash=True)):
        om = _ms(it, pm)
        od = [d for d in t.dirs[mfd][0] if t.dirs.get(mfd + "/" + d) and
              t.files.get(mfd + "/" + d + "/settings.json") and
              t.files[mfd + "/" + d + "/settings.json"].value.get("id") == it["id"]]
        assert len(od) == 1, od
        root = mfd + "/" + od[0] + "/files"
        t.dirs[mfd + "/" + od[0]][0].add("files")
        lep = api_path("projects", K, "managedfolders", it["id"], "contents")
        t.resources.add(lep)
        t.dirs[root] = (set(), om)
        for item in get(lep)["items"]:
            segs = item["path"].lstrip("/").split("/")
            rel = root
            for s_ in segs[:-1]:
                t.dirs[rel][0].add(s_)
                rel += "/" + s_
                t.dirs.setdefault(rel, (set(), om))
            t.dirs[rel][0].add(segs[-1])
            fe = api_path("projects", K, "managedfolders", it["id"], "contents", *segs)
            add_file(rel + "/" + segs[-1], "bytes", raw(fe),
                     _int_or(item.get("lastModified"), om), fe)


def _int_or(v, default):
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def _expect_wiki(t, get, K, pd, pm, add_file):
    """wiki/wiki.json, and each article as <name>.md + <name>.json, its children in
    <name>/ as the taxonomy nests them; names from each article's own document."""
    ep = api_path("projects", K, "wiki", trailing_slash=True)
    wiki = get(ep)
    t.dirs[pd][0].add("wiki")
    add_file(pd + "/wiki/wiki.json", "json", wiki, pm, ep)

    def level(items, rel):
        docs = []
        for it in items:
            e = api_path("projects", K, "wiki", it["id"])
            docs.append((it, get(e), e))
        named = listed_names([{"id": it["id"], "name": doc["article"].get("name")}
                              for it, doc, _ in docs], "id", "name")
        entries = {"wiki.json"} if rel == pd + "/wiki" else set()
        for (it, doc, e), (_, base) in zip(docs, named):
            am = _ms(doc["article"], pm)
            payload = doc.get("payload")
            add_file(rel + "/" + base + ".md", "text", payload if payload is not None else "",
                     am, e)
            add_file(rel + "/" + base + ".json", "json", doc["article"], am, e)
            entries |= {base + ".md", base + ".json"}
            if it.get("children"):
                entries.add(base)
                level(it["children"], rel + "/" + base)
        t.dirs[rel] = (entries, pm)

    level(wiki.get("taxonomy") or [], pd + "/wiki")


def vm_hwm_kib(pid: int) -> int:
    """The peak resident memory (VmHWM, KiB) of a running process."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for pid %d" % pid)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def errno_of(fn, *args, **kwargs):
    """The errno fn raises (OSError), or None if it succeeds."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return e.errno
    return None


def errname(code) -> str:
    return errno.errorcode.get(code, str(code)) if code is not None else "success"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


HANG_GUARD = 60.0   # not a time assertion: only keeps a hung mount from hanging the suite


def in_thread(fn, *args):
    """Runs fn in a thread: ("ok", value) or ("err", OSError).  Fails on a hang."""
    out = {}

    def run():
        try:
            out["ok"] = fn(*args)
        except OSError as e:
            out["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_GUARD)
    assert not t.is_alive(), "%s%r hung" % (getattr(fn, "__name__", fn), args)
    return ("ok", out.get("ok")) if "err" not in out else ("err", out["err"])


def assert_errno(result, *codes):
    """result (from in_thread) is an OSError with one of these errnos."""
    kind, v = result
    assert kind == "err", "expected %s, got success: %r" % (
        "/".join(errname(c) for c in codes), v if not isinstance(v, bytes) else v[:200])
    assert v.errno in codes, "expected %s, got %s (%s)" % (
        "/".join(errname(c) for c in codes), errname(v.errno), v)
