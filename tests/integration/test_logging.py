"""The daemon's log: levels (-o log_level=, -d), one line per failed request with DSS's
message, the journal's priorities, and the API key nowhere (log, command line,
environment), at debug level too."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time

import pytest

from dssfs_harness import (ADMIN_KEY, HANG_GUARD, READER_KEY, clean_env, errno_of, read_bytes,
                           run_dssfs)

SCHEMA = ("SALES", "datasets", "orders", "schema.json")


def wait_for_log(m, text, timeout=HANG_GUARD):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in m.stderr_text():
            return
        time.sleep(0.02)
    raise AssertionError("%r not logged; stderr:\n%s" % (text, m.stderr_text()))


def levels(m) -> set[str]:
    return {ln.split(":")[1].strip() for ln in m.stderr_text().splitlines()
            if ln.startswith("dssfs: ")}


@pytest.mark.expect_dssfs_errors
def test_log_level_warning_keeps_errors_only_and_warnings(emulator, mount_factory):
    """log_level=warning: no information line (not even "mounted"), but the failed
    request's line, with DSS's error type and message, once."""
    m = mount_factory(emulator, options=["log_level=warning", "prefetch=0"])
    emulator.add_fault(path_regex="/datasets/orders/schema$", status=500,
                       errorType="java.lang.IllegalStateException", message="disk on fire")
    assert errno_of(read_bytes, m.path(*SCHEMA)) is not None
    wait_for_log(m, "disk on fire")
    errors = m.error_lines()
    assert len(errors) == 1, errors
    assert "GET projects/SALES/datasets/orders/schema" in errors[0]
    assert "IllegalStateException" in errors[0], errors
    assert levels(m) == {"error"}, m.stderr_text()


def test_log_level_debug_without_d(emulator, mount_factory):
    """log_level=debug logs debug lines in the foreground (-f), without -d (no FUSE
    request trace, which only -d turns on)."""
    m = mount_factory(emulator, options=["log_level=debug"])
    read_bytes(m.path(*SCHEMA))
    assert {"info", "debug"} <= levels(m), m.stderr_text()
    assert "unique:" not in m.stderr_text()      # libfuse's -d trace


def test_log_level_info_is_the_default(mounted):
    _, m = mounted
    read_bytes(m.path(*SCHEMA))
    wait_for_log(m, "dssfs: info: mounted ")
    assert "dssfs: debug:" not in m.stderr_text()


@pytest.mark.parametrize("value", ["verbose", "INFO", "warn", ""])
def test_log_level_other_values_are_refused(emulator, home, tmp_path, value):
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": emulator.admin_key})
    rc, out, err = run_dssfs(["-f", "-o", "log_level=" + value, str(mp)], env, mountpoint=mp)
    assert rc != 0
    assert "log_level=%s (error, warning, info or debug)" % value in err, err
    assert emulator.request_count() == 0


def test_journal_priorities(emulator, mount_factory, tmp_path):
    """With stderr the journal (JOURNAL_STREAM names its device and inode, as systemd
    sets it for a unit), each line starts with its syslog priority, <6> for info."""
    d = tmp_path / "journal"
    d.mkdir()
    (d / "dssfs.stderr").touch()
    st = os.stat(d / "dssfs.stderr")
    m = mount_factory(emulator, name="journal",
                      env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
    assert os.stat(m.stderr_path).st_ino == st.st_ino
    wait_for_log(m, "<6>dssfs: info: mounted ")
    assert all(ln[:1] == "<" for ln in m.stderr_text().splitlines() if ln), m.stderr_text()


def _keys_in(data: bytes, key: str) -> list[str]:
    forms = {"key": key.encode(), "basic auth": base64.b64encode(("%s:" % key).encode()),
             "bearer-less key prefix": key[:12].encode()}
    return [name for name, f in forms.items() if f in data]


def _proc_bytes(pid, what) -> bytes:
    with open("/proc/%d/%s" % (pid, what), "rb") as f:
        return f.read()


@pytest.mark.expect_dssfs_errors
@pytest.mark.parametrize("source", ["environment", "config.json", "api_key_file"])
def test_key_never_logged_at_debug_level(emulator_factory, mount_factory, home, tmp_path,
                                         source):
    """-d and log_level=debug, the key from each source: a walk, a save, refusals (403 of
    a reader key, injected 500s), SIGHUP and SIGUSR1 write plenty to the log; the key is
    nowhere in it, nor in /proc/PID/cmdline or /proc/PID/environ."""
    emu = emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])
    env = {}
    opts = ["log_level=debug"]
    if source == "environment":
        env = {"DKU_DSS_URL": emu.url, "DKU_API_KEY": ADMIN_KEY}
    elif source == "config.json":
        cfgdir = home / ".dataiku"
        cfgdir.mkdir()
        (cfgdir / "config.json").write_text(json.dumps({"dss_instances": {
            "main": {"url": emu.url, "api_key": ADMIN_KEY}}, "default_instance": "main"}))
        os.chmod(cfgdir / "config.json", 0o600)
    else:
        kf = tmp_path / "key"
        kf.write_text(ADMIN_KEY + "\n")
        os.chmod(kf, 0o600)
        opts += ["url=" + emu.url, "api_key_file=" + str(kf)]
    m = mount_factory(emu, options=opts, env=env, creds=None, debug=True)
    reader = mount_factory(emu, options=["log_level=debug"], key=READER_KEY, debug=True)

    emu.add_fault(path_regex="/recipes/?$", status=500, message="recipes unavailable")
    subprocess.run(["tar", "cf", "/dev/null", "-C", m.mnt, "."], capture_output=True,
                   timeout=HANG_GUARD)
    subprocess.run(["tar", "cf", "/dev/null", "-C", reader.mnt, "."], capture_output=True,
                   timeout=HANG_GUARD)
    doc = json.loads(read_bytes(m.path(*SCHEMA)))
    with open(m.path(*SCHEMA), "w") as f:
        f.write(json.dumps(doc))
    for mm in (m, reader):
        os.kill(mm.proc.pid, signal.SIGHUP)
        os.kill(mm.proc.pid, signal.SIGUSR1)
        wait_for_log(mm, "dssfs: info: stats: ")
        wait_for_log(mm, "SIGHUP: dropped all cached objects")
    assert "recipes unavailable" in m.stderr_text()
    assert "dssfs: debug:" in m.stderr_text() and "unique:" in m.stderr_text()
    for mm, key in ((m, ADMIN_KEY), (reader, READER_KEY)):
        pid = mm.proc.pid
        log = (mm.stderr_text() + mm.stdout_text()).encode()
        assert len(log) > 10000
        assert _keys_in(log, key) == []
        assert _keys_in(_proc_bytes(pid, "cmdline"), key) == []
        assert _keys_in(_proc_bytes(pid, "environ"), key) == []


def test_key_not_in_the_refusal_of_a_wrong_key(emulator, home, tmp_path):
    """A key DSS refuses: the message says so, at debug level, without the key."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    wrong = "wrongKey-5e0c1d2a9b7f4e63"
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": wrong})
    rc, out, err = run_dssfs(["-f", "-d", "-o", "log_level=debug", str(mp)], env,
                             mountpoint=mp)
    assert rc != 0 and "cannot list the projects" in err, err
    assert _keys_in((out + err).encode(), wrong) == []
