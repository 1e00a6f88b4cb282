"""Command line, options and credentials of the real binary."""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import socket
import stat
import subprocess

import pytest

from dssfs_harness import (ADMIN_KEY, READER_KEY, clean_env, dssfs_has_asan, errname, errno_of,
                           is_mounted, mount_entry, read_bytes, run_dssfs, unmount, project_names)

SECRET = "cmdlineSecret-9d1f0a7be3c24411"


def _mp(tmp_path, name="mnt"):
    p = tmp_path / name
    p.mkdir(exist_ok=True)
    return str(p)


def _basic(key):
    return base64.b64encode(("%s:" % key).encode()).decode()


@pytest.fixture
def two_key_emulator(emulator_factory):
    return emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])


def _write_config(path, emu, default="limited"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"dss_instances": {
            "main": {"url": emu.url, "api_key": ADMIN_KEY},
            "limited": {"url": emu.url, "api_key": READER_KEY}},
            "default_instance": default}, f)
    os.chmod(path, 0o600)


# --- information -----------------------------------------------------------------------------

def test_help_exits_0(tmp_path, home):
    rc, out, err = run_dssfs(["--help"], clean_env(home))
    assert rc == 0, err
    assert "usage:" in out and "cache_ttl" in out and "api_key_file" in out


def test_version_exits_0(home):
    rc, out, err = run_dssfs(["--version"], clean_env(home))
    assert rc == 0, err
    assert "dssfs version" in out


def test_missing_mountpoint_is_an_error(home, emulator):
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": ADMIN_KEY})
    rc, out, err = run_dssfs(["-f"], env)
    assert rc != 0 and "usage" in err.lower()


@pytest.mark.parametrize("opt", ["cache_ttl=-1", "timeout=0", "attr_timeout=0",
                                 "cache_max=0", "retries=-1"])
def test_invalid_option_values_are_refused(tmp_path, home, emulator, opt):
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": ADMIN_KEY})
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", "-o", opt, mp], env, mountpoint=mp)
    assert rc == 1 and "invalid option value" in err
    assert not is_mounted(mp)


# --- SOURCE MOUNTPOINT, and the options of an fstab line ---------------------------------------

def test_source_argument_names_a_config_instance(two_key_emulator, mount_factory, home):
    """`dssfs SOURCE MOUNTPOINT` (what mount.fuse3 runs): SOURCE is an instance of
    config.json, and the mount table shows it as the file system's name."""
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="limited")
    m = mount_factory(two_key_emulator, creds=None, args=["main"])
    assert project_names(m.mnt) == ["HR_ANALYTICS", "MARKETING", "SALES"]
    assert mount_entry(m.mnt)[0] == "main"


@pytest.mark.parametrize("source", ["dssfs", "none"])
def test_source_dssfs_or_none_names_no_instance(two_key_emulator, mount_factory, home,
                                                source):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="limited")
    m = mount_factory(two_key_emulator, creds=None, args=[source])
    assert project_names(m.mnt) == ["SALES"]          # the default instance
    assert mount_entry(m.mnt)[0] == source


def test_source_and_the_same_instance_option(two_key_emulator, mount_factory, home):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="limited")
    m = mount_factory(two_key_emulator, creds=None, args=["main"], options=["instance=main"])
    assert len(project_names(m.mnt)) == 3


def test_source_contradicting_the_instance_option_is_refused(tmp_path, home,
                                                             two_key_emulator):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator)
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", "-o", "instance=limited", "main", mp], clean_env(home),
                             mountpoint=mp)
    assert rc == 1 and "different instances" in err and not is_mounted(mp)


def test_three_arguments_are_refused(tmp_path, home, emulator):
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": ADMIN_KEY})
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", "dssfs", mp, mp], env, mountpoint=mp)
    assert rc != 0 and "too many arguments" in err and not is_mounted(mp)


FSTAB_ONLY_OPTIONS = ["_netdev", "nofail", "noauto", "auto", "user", "users", "nouser",
                      "defaults", "x-systemd.automount", "x-systemd.requires=network.target",
                      "x-systemd.mount-timeout=30", "x-gvfs-hide", "comment=dss"]


def test_options_for_mount_and_systemd_are_ignored(emulator, mount_factory):
    """What an fstab line may hold for mount(8), mount.fuse3 and systemd: accepted, and
    not passed on to the kernel."""
    m = mount_factory(emulator, args=["dssfs"], options=["ro"] + FSTAB_ONLY_OPTIONS)
    assert len(project_names(m.mnt)) == 3
    opts = mount_entry(m.mnt)[3].split(",")
    assert "ro" in opts and "default_permissions" in opts
    assert not set(opts) & set(FSTAB_ONLY_OPTIONS)


def test_unknown_options_are_still_refused(tmp_path, home, emulator):
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": ADMIN_KEY})
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", "-o", "no_such_option", mp], env, mountpoint=mp)
    assert rc != 0 and "no_such_option" in err and not is_mounted(mp)


# --- keys on the command line ----------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["-o", "api_key=" + SECRET],
    ["-o", "ro,api_key=" + SECRET],
    ["-oapi_key=" + SECRET],
    ["-o", "apikey=" + SECRET],
    ["-o", "key=" + SECRET],
    ["--api-key", SECRET],
    ["--api-key=" + SECRET],
    ["--api_key=" + SECRET],
])
def test_api_key_on_command_line_is_refused_without_echoing_it(tmp_path, home, emulator, argv):
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": ADMIN_KEY})
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f"] + argv + [mp], env, mountpoint=mp)
    assert rc == 1
    assert SECRET not in out and SECRET not in err
    assert "command line" in err
    assert not is_mounted(mp)


# --- where credentials come from ---------------------------------------------------------------

def test_no_credentials_names_the_variables(tmp_path, home):
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", mp], clean_env(home), mountpoint=mp)
    assert rc == 1
    assert "DKU_DSS_URL" in err and "DKU_API_KEY" in err and "config.json" in err
    assert not is_mounted(mp)


def test_environment_credentials(mounted):
    emu, m = mounted
    assert project_names(m.mnt) == sorted(p["projectKey"] for p in emu.api_get("projects/"))
    assert "key from DKU_API_KEY" in m.stderr_text()


def test_config_json_default_instance(two_key_emulator, mount_factory, home):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="limited")
    m = mount_factory(two_key_emulator, creds=None)
    assert project_names(m.mnt) == ["SALES"]
    assert READER_KEY not in m.stderr_text()


def test_instance_option_picks_a_non_default_instance(two_key_emulator, mount_factory, home):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="limited")
    m = mount_factory(two_key_emulator, creds=None, options=["instance=main"])
    assert project_names(m.mnt) == ["HR_ANALYTICS", "MARKETING", "SALES"]


def test_config_option_overrides_the_file(two_key_emulator, mount_factory, home, tmp_path):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="limited")
    other = tmp_path / "elsewhere" / "dss.json"
    _write_config(str(other), two_key_emulator, default="main")
    m = mount_factory(two_key_emulator, creds=None, options=["config=%s" % other])
    assert project_names(m.mnt) == ["HR_ANALYTICS", "MARKETING", "SALES"]


def test_environment_wins_over_config_default(two_key_emulator, mount_factory, home):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="limited")
    m = mount_factory(two_key_emulator, key=ADMIN_KEY)
    assert len(project_names(m.mnt)) == 3


def test_instance_option_wins_over_environment(two_key_emulator, mount_factory, home):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator, default="main")
    m = mount_factory(two_key_emulator, key=ADMIN_KEY, options=["instance=limited"])
    assert project_names(m.mnt) == ["SALES"]


def test_unknown_instance_is_refused(tmp_path, home, two_key_emulator):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator)
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", "-o", "instance=nope", mp], clean_env(home),
                             mountpoint=mp)
    assert rc == 1 and '"nope"' in err and READER_KEY not in err


def _write_elsewhere_default(home):
    """config.json whose default instance is another server, with its own key and no TLS
    verification."""
    path = home / ".dataiku" / "config.json"
    os.makedirs(path.parent, exist_ok=True)
    path.write_text(json.dumps({"dss_instances": {"elsewhere": {
        "url": "https://dss.invalid:11200", "api_key": READER_KEY,
        "no_check_certificate": True}}, "default_instance": "elsewhere"}))
    os.chmod(path, 0o600)


def test_url_option_and_key_file_ignore_another_servers_instance(two_key_emulator,
                                                                 mount_factory, home, tmp_path):
    """-o url= names the server: the default instance (another server) lends neither its
    key nor its no_check_certificate."""
    _write_elsewhere_default(home)
    kf = tmp_path / "dss.key"
    kf.write_text(ADMIN_KEY + "\n")
    os.chmod(kf, 0o600)
    m = mount_factory(two_key_emulator, creds=None, options=[
        "url=%s" % two_key_emulator.url, "api_key_file=%s" % kf])
    assert project_names(m.mnt) == ["HR_ANALYTICS", "MARKETING", "SALES"]
    assert "TLS certificate verification is disabled" not in m.stderr_text()


def test_url_option_with_dku_api_key_uses_that_key(two_key_emulator, mount_factory, home):
    """-o url= and DKU_API_KEY (no DKU_DSS_URL): the environment's key, not the key of a
    config.json instance of another server."""
    _write_elsewhere_default(home)
    m = mount_factory(two_key_emulator, creds=None, env={"DKU_API_KEY": ADMIN_KEY},
                      options=["url=%s" % two_key_emulator.url])
    assert project_names(m.mnt) == ["HR_ANALYTICS", "MARKETING", "SALES"]
    assert "key from DKU_API_KEY" in m.stderr_text()
    assert "TLS certificate verification is disabled" not in m.stderr_text()


def test_url_option_contradicting_the_instance_option_is_refused(tmp_path, home,
                                                                 two_key_emulator):
    _write_config(home / ".dataiku" / "config.json", two_key_emulator)
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", "-o", "instance=main,url=http://127.0.0.1:1", mp],
                             clean_env(home), mountpoint=mp)
    assert rc == 1 and 'not the URL of instance "main"' in err
    assert ADMIN_KEY not in err and not is_mounted(mp)


def test_api_key_file_option(emulator, mount_factory, tmp_path):
    kf = tmp_path / "dss.key"
    kf.write_text("  %s  \n# comment\n" % ADMIN_KEY)
    os.chmod(kf, 0o600)
    m = mount_factory(emulator, creds=None, options=["api_key_file=%s" % kf,
                                                     "url=%s/" % emulator.url])
    assert project_names(m.mnt) == ["HR_ANALYTICS", "MARKETING", "SALES"]
    assert read_bytes(m.path("SALES", "datasets", "orders", "schema.json"))
    assert "warning" not in m.stderr_text()


def test_api_key_file_readable_by_others_is_warned_about(emulator, mount_factory, tmp_path):
    kf = tmp_path / "dss.key"
    kf.write_text(ADMIN_KEY + "\n")
    os.chmod(kf, 0o644)
    m = mount_factory(emulator, creds=None, options=["api_key_file=%s" % kf,
                                                     "url=%s" % emulator.url])
    assert len(project_names(m.mnt)) == 3
    assert "chmod 600" in m.stderr_text() and ADMIN_KEY not in m.stderr_text()


def test_wrong_key_fails_with_a_clear_message(tmp_path, home, emulator):
    wrong = "wrongKey-5e6f7a8b9c0d"
    mp = _mp(tmp_path)
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": wrong})
    rc, out, err = run_dssfs(["-f", mp], env, mountpoint=mp)
    assert rc == 1
    assert "cannot list the projects" in err and emulator.url in err
    assert "401" in err or "Permission denied" in err
    assert wrong not in err and wrong not in out and _basic(wrong) not in err
    assert not is_mounted(mp)


def test_unreachable_server_fails_to_mount(tmp_path, home):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                      # nothing listens there now
    mp = _mp(tmp_path)
    env = clean_env(home, {"DKU_DSS_URL": "http://127.0.0.1:%d" % port,
                           "DKU_API_KEY": ADMIN_KEY})
    rc, out, err = run_dssfs(["-f", "-o", "connect_timeout=2", mp], env, mountpoint=mp,
                             timeout=60)
    assert rc == 1 and "cannot list the projects" in err
    assert ADMIN_KEY not in err
    assert not is_mounted(mp)


def test_url_without_scheme_is_refused(tmp_path, home):
    mp = _mp(tmp_path)
    env = clean_env(home, {"DKU_DSS_URL": "127.0.0.1:1", "DKU_API_KEY": ADMIN_KEY})
    rc, out, err = run_dssfs(["-f", mp], env, mountpoint=mp)
    assert rc == 1 and "http://" in err


def test_debug_output_never_contains_the_key(emulator, mount_factory):
    m = mount_factory(emulator, debug=True)
    subprocess.run(["ls", "-lR", m.mnt], capture_output=True, timeout=120, check=True)
    read_bytes(m.path("SALES", "permissions.json"))
    m.sighup()
    read_bytes(m.path("SALES", "permissions.json"))
    out = m.stderr_text() + m.stdout_text()
    assert "GET projects/SALES/permissions" in out        # -d does log requests
    assert ADMIN_KEY not in out and _basic(ADMIN_KEY) not in out
    with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
        assert ADMIN_KEY.encode() not in f.read()


def test_single_threaded_mode(emulator, mount_factory):
    m = mount_factory(emulator, args=["-s"])
    assert json.loads(read_bytes(m.path("SALES", "datasets", "orders", "schema.json"))) == \
        emulator.api_get("projects/SALES/datasets/orders/schema")


def test_no_check_certificate_is_warned_about(emulator, mount_factory):
    m = mount_factory(emulator, env={"DKU_NO_CHECK_CERTIFICATE": "true"})
    assert len(project_names(m.mnt)) == 3
    assert "TLS certificate verification is disabled" in m.stderr_text()


# --- read-only mounts and the errnos of opening for write ------------------------------------

def test_read_only_mount_shows_no_write_bits_and_refuses_writers(emulator, mount_factory):
    m = mount_factory(emulator, options=["ro"])
    assert "ro" in mount_entry(m.mnt)[3].split(",")
    for root, dnames, fnames in os.walk(m.mnt):
        for f in fnames:
            st = os.stat(os.path.join(root, f))
            assert st.st_mode & 0o222 == 0, (root, f, oct(st.st_mode))
    for rel in (("SALES", "datasets", "orders", "schema.json"),
                ("SALES", "datasets", "orders", "partitions.json")):
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
            code = errno_of(os.open, m.path(*rel), flags)
            assert code in (errno.EROFS, errno.EACCES), (rel, errname(code))
    assert read_bytes(m.path("SALES", "datasets", "orders", "schema.json"))


@pytest.mark.expect_dssfs_errors
def test_opening_for_write_fails_with_the_documented_errno(mounted):
    """Writable files open for writing (nothing is sent until something is written and
    flushed); read-only ones refuse with EACCES; truncating a JSON file to nothing is
    refused as invalid content (EINVAL) without a request."""
    emu, m = mounted
    writable = m.path("SALES", "datasets", "orders", "schema.json")
    readonly = m.path("SALES", "datasets", "orders", "partitions.json")
    assert stat.S_IMODE(os.stat(writable).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(readonly).st_mode) == 0o444
    before = read_bytes(writable)
    emu.reset_stats()
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND):
        fd = os.open(writable, flags)
        os.close(fd)
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        assert errno_of(os.open, readonly, flags) == errno.EACCES, flags
    assert errno_of(os.truncate, writable, 0) == errno.EINVAL
    assert errno_of(os.truncate, readonly, 0) == errno.EACCES
    m.settle()
    assert [ln for ln in emu.log_lines() if not ln.startswith("GET ")] == []
    assert read_bytes(writable) == before


def test_sigterm_unmounts(emulator, mount_factory):
    m = mount_factory(emulator)
    m.check_exit_status = False       # checked by the next test
    os.listdir(m.mnt)
    m.settle()                        # the RELEASEDIR of listdir is answered
    os.kill(m.proc.pid, signal.SIGTERM)
    m.proc.wait(timeout=30)
    assert not is_mounted(m.mnt)


def test_sigterm_exits_0(emulator, mount_factory):
    m = mount_factory(emulator)
    m.check_exit_status = False
    os.listdir(m.mnt)
    m.settle()
    os.kill(m.proc.pid, signal.SIGTERM)
    assert m.proc.wait(timeout=30) == 0


@pytest.mark.skipif(not dssfs_has_asan(), reason="needs a dssfs built with DSSFS_SANITIZE=ON "
                    "(leaks are only visible to LeakSanitizer)")
def test_no_leak_when_stopped_with_open_files(emulator, mount_factory):
    m = mount_factory(emulator)
    m.check_exit_status = False
    f = open(m.path("SALES", "datasets", "orders", "schema.json"), "rb")
    d = os.open(m.path("SALES", "datasets"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert f.read(10)
        os.kill(m.proc.pid, signal.SIGTERM)
        m.proc.wait(timeout=30)
    finally:
        for close in (f.close, lambda: os.close(d)):
            try:
                close()
            except OSError:           # ENOTCONN: the daemon is gone
                pass
    assert not unmount(m.mnt)
    m.finished = True                 # checked here, not by the finalizer
    text = m.stderr_text()
    assert "LeakSanitizer" not in text, text[-3000:]
