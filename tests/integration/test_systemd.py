"""systemd: the notify protocol (Type=notify) and the dssfs@.service template unit.

No systemd runs here (no PID 1 manager in the test machine), so the tests play its part:
a unix datagram socket named by NOTIFY_SOCKET receives what dssfs sends (sd_notify), and
the unit's Environment=, ExecStartPre=, ExecStart= and ExecStop= lines are expanded as
systemd expands them and run with the unit's capability bounding set, no_new_privs and
umask (setpriv).  `systemd-analyze verify` checks the unit file itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dssfs_harness import (HANG_GUARD, START_TIMEOUT, Mount, clean_env, dssfs_bin,
                           is_mounted, read_bytes, stop_process, unmount)

PERIOD_S = 5   # SERVICE_STATUS_PERIOD_S (include/dssfs/service.h)
STATUS_RE = re.compile(r"^requests: (\d+) \((\d+) failed\), cache: (\d+) hits, (\d+) fetches, "
                       r"errors: (\d+)(?:; last error: (.*))?$")
SCHEMA = ("SALES", "datasets", "orders", "schema.json")


def _has_libsystemd() -> bool:
    r = subprocess.run(["ldd", str(dssfs_bin())], capture_output=True, text=True)
    return "libsystemd.so" in r.stdout


needs_libsystemd = pytest.mark.skipif(
    not _has_libsystemd(), reason="dssfs built without libsystemd (DSSFS_SYSTEMD=OFF or "
    "libsystemd-dev missing): it sends nothing to NOTIFY_SOCKET")


class NotifySocket:
    """The service manager's end: every datagram, with the time it arrived and, for
    READY=1, whether the mount was there and answered at that moment."""

    def __init__(self, path: Path, mountpoint: str | None = None):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.mountpoint = mountpoint
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            msg = dict(ln.split("=", 1) for ln in data.decode().split("\n") if "=" in ln)
            msg["_t"] = time.monotonic()
            if msg.get("READY") == "1" and self.mountpoint:
                # what a unit ordered After= this one would find now
                msg["_mounted"] = is_mounted(self.mountpoint)
                msg["_listing"] = sorted(os.listdir(self.mountpoint)) \
                    if msg["_mounted"] else None
            with self.cond:
                self.messages.append(msg)
                self.cond.notify_all()

    def wait_for(self, pred, timeout=HANG_GUARD, after=0) -> dict:
        """The first message from index ``after`` on for which pred is true."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages[after:]:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no such notification within %.0f s; got %r"
                                         % (timeout, self.messages))
                self.cond.wait(left)

    def count(self) -> int:
        with self.cond:
            return len(self.messages)

    def close(self):
        self._stop = True
        self.thread.join()
        self.sock.close()


def status_figures(msg) -> dict:
    m = STATUS_RE.match(msg.get("STATUS", ""))
    assert m, msg
    return {"requests": int(m[1]), "failed": int(m[2]), "hits": int(m[3]),
            "fetches": int(m[4]), "errors": int(m[5]), "last_error": m[6]}


def start_nowait(m: Mount) -> Mount:
    """Mount.start() without waiting for the mount (finish() still cleans up)."""
    m._out = open(m.stdout_path, "wb")
    m._err = open(m.stderr_path, "wb")
    m.proc = subprocess.Popen(m.command(), stdin=subprocess.DEVNULL, stdout=m._out,
                              stderr=m._err, env=m.env, cwd=str(m.workdir))
    return m


def dssfs_stats(m) -> dict:
    r = subprocess.run([str(dssfs_bin()), "stats", m.mnt], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def quiet(m):
    """Waits until nothing is in flight nor queued (prefetch), figures stable."""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        a = dssfs_stats(m)
        time.sleep(0.2)
        b = dssfs_stats(m)
        if not b["requests"]["in_flight"] and not (b["prefetch"] or {}).get("queued") \
                and a["requests"] == b["requests"]:
            return
    raise AssertionError("the mount did not go quiet")


@needs_libsystemd
def test_notify_ready_status_stopping(emulator, tmp_path, home):
    """READY=1 comes only once the mount is there and DSS answered (the projects listing
    is held 2 s: nothing before), with a STATUS= whose request count is what the emulator
    answered; STATUS= comes again every few seconds and on SIGUSR1 with figures equal to
    the emulator's count, the failures and the last error (DSS's message); STOPPING=1
    comes at the unmount, and dssfs exits 0."""
    emu = emulator
    m = Mount(tmp_path / "m", env=clean_env(home, {
        "DKU_DSS_URL": emu.url, "DKU_API_KEY": emu.admin_key,
        "NOTIFY_SOCKET": str(tmp_path / "notify")}), expect_errors=True)
    ns = NotifySocket(tmp_path / "notify", m.mnt)
    emu.add_fault(path_regex="^/projects/?$", delay_ms=2000, count=1)
    try:
        start_nowait(m)
        time.sleep(1.0)
        assert ns.count() == 0 and not is_mounted(m.mnt)
        ready = ns.wait_for(lambda x: x.get("READY") == "1", timeout=START_TIMEOUT)
        assert ready["_mounted"] and "SALES" in ready["_listing"], ready
        fig = status_figures(ready)
        assert 1 <= fig["requests"] <= emu.request_count()
        assert fig["last_error"] is None

        # periodic, without asking
        n = ns.count()
        periodic = ns.wait_for(lambda x: "STATUS" in x, timeout=2 * PERIOD_S + 5, after=n)
        status_figures(periodic)

        # a failed request: DSS's message is the last error
        emu.add_fault(path_regex="/datasets/orders/schema$", status=500,
                      errorType="java.lang.IllegalStateException", message="disk on fire")
        with pytest.raises(OSError):
            read_bytes(m.path(*SCHEMA))
        quiet(m)
        n = ns.count()
        os.kill(m.proc.pid, signal.SIGUSR1)
        asked = ns.wait_for(lambda x: "STATUS" in x, timeout=HANG_GUARD, after=n)
        fig = status_figures(asked)
        assert fig["requests"] == emu.request_count() == dssfs_stats(m)["requests"]["total"]
        assert fig["failed"] >= 1 and fig["errors"] >= 1
        assert "disk on fire" in fig["last_error"], asked
        assert "disk on fire" in m.stderr_text()

        n = ns.count()
        assert unmount(m.mnt) == []
        stopping = ns.wait_for(lambda x: x.get("STOPPING") == "1", after=n)
        assert "READY" not in stopping
        assert m.proc.wait(timeout=HANG_GUARD) == 0
    finally:
        problems = m.finish()
        ns.close()
    assert problems == [], problems


# --- the unit ----------------------------------------------------------------------------

def unit_file() -> Path:
    """The dssfs@.service that goes with the binary under test: the installed one for
    /usr/bin/dssfs (the package), else the one the build configured beside the binary."""
    b = Path(os.path.realpath(dssfs_bin()))
    if b == Path("/usr/bin/dssfs"):
        return Path("/usr/lib/systemd/system/dssfs@.service")
    return b.parent / "dssfs@.service"


needs_unit = pytest.mark.skipif(not unit_file().exists(),
                                reason="no dssfs@.service beside the binary under test")


def parse_unit(text: str) -> dict[str, list[str]]:
    """[Service] settings: name -> values in order (continuation lines joined)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def expand_command(line: str, env: dict) -> list[str]:
    """systemd.service(5) "Command lines": ${VAR} is one word (or part of one), a word that
    is exactly $VAR splits at white space (zero words if empty)."""
    words = []
    for w in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            words += env.get(m[1], "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                                lambda g: env.get(g[1], ""), w))
    return words


def unit_environment(settings, instance: str, env_root: Path) -> dict:
    env = {}
    for v in settings.get("Environment", []):
        for assignment in shlex.split(v.replace("%i", instance)):
            k, val = assignment.split("=", 1)
            env[k] = val
    for v in settings.get("EnvironmentFile", []):
        optional = v.startswith("-")
        path = env_root / v.lstrip("-").replace("%i", instance).lstrip("/")
        if not path.exists():
            assert optional, path
            continue
        for ln in path.read_text().splitlines():
            if ln.strip() and not ln.startswith("#"):
                k, val = ln.split("=", 1)
                env[k.strip()] = val.strip()
    return env


def hardened(settings) -> tuple[list[str], int]:
    """setpriv's arguments for the unit's CapabilityBoundingSet= and NoNewPrivileges=, and
    its UMask=."""
    caps = settings["CapabilityBoundingSet"][-1].split()
    args = ["setpriv", "--bounding-set=-all," + ",".join(
        "+" + c.lower().removeprefix("cap_") for c in caps)]
    if settings.get("NoNewPrivileges", ["no"])[-1] == "yes":
        args.append("--no-new-privs")
    return args + ["--"], int(settings.get("UMask", ["0022"])[-1], 8)


@needs_libsystemd
@needs_unit
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv, as the unit runs as root")
def test_unit_commands_mount_and_unmount(emulator, tmp_path):
    """The unit's own lines, expanded for instance `prod` with /etc/dssfs/prod.env setting
    the config file and the mountpoint: ExecStartPre makes the mountpoint, ExecStart mounts
    the config.json instance under the unit's capability bounding set, no_new_privs and
    umask (READY=1, the projects listed), ExecStop unmounts, dssfs says STOPPING=1 and
    exits 0."""
    settings = parse_unit(unit_file().read_text())
    assert settings["Type"] == ["notify"]
    root = tmp_path / "root"
    (root / "etc" / "dssfs").mkdir(parents=True)
    cfg = root / "etc" / "dssfs" / "config.json"
    cfg.write_text(json.dumps({"dss_instances": {
        "prod": {"url": emulator.url, "api_key": emulator.admin_key}}}))
    os.chmod(cfg, 0o600)
    mp = tmp_path / "mnt" / "dss" / "prod"
    (root / "etc" / "dssfs" / "prod.env").write_text(
        "DSSFS_CONFIG=%s\nDSSFS_MOUNTPOINT=%s\nDSSFS_OPTIONS=-o ro,cache_ttl=5\n" % (cfg, mp))
    env = unit_environment(settings, "prod", root)
    env.update({"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "NOTIFY_SOCKET": str(tmp_path / "notify")})
    prefix, umask = hardened(settings)

    def command(name):
        words = expand_command(settings[name][0].replace("%i", "prod"), env)
        if words[0].endswith("/dssfs"):   # the binary under test, wherever the unit says
            words[0] = str(dssfs_bin())
        return prefix + words

    for pre in settings.get("ExecStartPre", []):
        subprocess.run(prefix + expand_command(pre, env), check=True, env=env)
    assert mp.is_dir()
    ns = NotifySocket(tmp_path / "notify", str(mp))
    log = open(tmp_path / "dssfs.log", "wb")
    proc = subprocess.Popen(command("ExecStart"), env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, preexec_fn=lambda: os.umask(umask))
    try:
        ready = ns.wait_for(lambda x: x.get("READY") == "1", timeout=START_TIMEOUT)
        assert ready["_mounted"] and "SALES" in ready["_listing"], \
            (tmp_path / "dssfs.log").read_text()
        with open("/proc/mounts") as f:
            entry = [ln.split() for ln in f if ln.split()[1] == str(mp)][-1]
        assert entry[0] == "prod" and entry[2] == "fuse.dssfs" and "ro" in entry[3].split(",")
        stop = subprocess.run(command("ExecStop"), env=env, capture_output=True, text=True,
                              timeout=HANG_GUARD)
        assert stop.returncode == 0, stop.stderr
        ns.wait_for(lambda x: x.get("STOPPING") == "1")
        assert proc.wait(timeout=HANG_GUARD) == 0
        assert not is_mounted(mp)
    finally:
        unmount(mp)
        stop_process(proc)
        log.close()
        ns.close()
    text = (tmp_path / "dssfs.log").read_text()
    assert "error" not in text and emulator.admin_key not in text, text


@needs_unit
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` finds nothing to say of the unit (an instance of it, with
    ExecStart naming the binary under test): no unknown setting, no parse error."""
    text = unit_file().read_text()
    text = re.sub(r"^ExecStart=\S+/dssfs ", "ExecStart=%s " % dssfs_bin(), text, flags=re.M)
    unit = tmp_path / "dssfs@prod.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
