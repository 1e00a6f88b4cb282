"""The Debian package and the man page.

The version and the man page are checked on any build: `dssfs --version` says the
version of packaging/debian/changelog (its one source), and the man page names every
option of `dssfs --help` and of the README's option table.  The rest runs when the binary
under test is the package's /usr/bin/dssfs (packaging/ci-package.sh installs it): the
package holds the binary, the man page, the unit and the docs, `man dssfs` shows the page,
`systemd-analyze verify` passes on the installed unit, and `mount -t fuse.dssfs` mounts
with the installed binary as an administrator would.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dssfs_harness import (HANG_GUARD, REPO, clean_env, dssfs_bin, is_mounted, read_bytes,
                           unmount)

SCHEMA = ("SALES", "datasets", "orders", "schema.json")
CHANGELOG = REPO / "packaging" / "debian" / "changelog"


def installed() -> bool:
    """Whether the binary under test is the dssfs package's /usr/bin/dssfs."""
    if os.path.realpath(dssfs_bin()) != "/usr/bin/dssfs":
        return False
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "dssfs"], capture_output=True,
                       text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


needs_package = pytest.mark.skipif(
    not installed(), reason="needs the dssfs package installed and DSSFS_BIN=/usr/bin/dssfs "
    "(packaging/ci-package.sh does both)")


def changelog_version() -> str:
    r = subprocess.run(["dpkg-parsechangelog", "-l", str(CHANGELOG), "-S", "Version"],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def test_version_is_the_changelog_s():
    """`dssfs --version` says the version of the newest packaging/debian/changelog entry
    (a native package: no Debian revision), the one CMake builds into the binary."""
    r = subprocess.run([str(dssfs_bin()), "--version"], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 0
    first = r.stdout.splitlines()[0]
    assert first == "dssfs version %s" % changelog_version(), first
    if installed():
        q = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dssfs"],
                           capture_output=True, text=True, check=True)
        assert first == "dssfs version %s" % q.stdout


def man_page() -> Path:
    if installed():
        return Path("/usr/share/man/man1/dssfs.1.gz")
    return Path(os.path.realpath(dssfs_bin())).parent / "dssfs.1"


def rendered(path: Path, width=100) -> str:
    """The page as `man` shows it, words cut at the end of a line joined again."""
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1")
    r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                       env=env, timeout=HANG_GUARD)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return re.sub(r"[\u2010-](\n\s*)", "", r.stdout)


@pytest.mark.skipif(not man_page().exists(), reason="no man page beside the binary under "
                    "test (pandoc missing at build: DSSFS_MAN)")
@pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)")
def test_man_page_names_every_option():
    """Every -o option of `dssfs --help` (dssfs's own part) and of the README's table,
    the signals and config.json are in the page, which groff renders without a warning."""
    text = rendered(man_page())
    help_text = subprocess.run([str(dssfs_bin()), "--help"], capture_output=True,
                               text=True, timeout=HANG_GUARD).stdout
    own = help_text.split("See dssfs(1).")[0]
    options = set(re.findall(r"-o ([a-z_]+)", own))
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Mount options"):readme.index("## The tree")]
    options |= set(re.findall(r"`-o ([a-z_]+)", table))
    assert len(options) > 25, options
    missing = sorted(o for o in options if "-o %s" % o not in text)
    assert missing == [], missing
    for word in ("SIGHUP", "SIGUSR1", "SIGTERM", "config.json", "dssfs@.service",
                 "fuse.dssfs", "ESTALE", "dssfs stats", "DKU_API_KEY", "log_level"):
        assert word in text, word


@needs_package
def test_package_contents_and_man_dssfs():
    """The package holds the binary, the man page, the unit and the docs; `man dssfs`
    finds and shows the page."""
    files = set(subprocess.run(["dpkg", "-L", "dssfs"], capture_output=True, text=True,
                               check=True).stdout.split())
    for f in ("/usr/bin/dssfs", "/usr/share/man/man1/dssfs.1.gz",
              "/usr/lib/systemd/system/dssfs@.service", "/usr/share/doc/dssfs/README.md.gz",
              "/usr/share/doc/dssfs/SEMANTICS.md.gz", "/usr/share/doc/dssfs/copyright",
              "/usr/share/doc/dssfs/changelog.gz"):
        assert f in files, f
    r = subprocess.run(["man", "-P", "cat", "dssfs"], capture_output=True, text=True,
                       env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8"),
                       timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    assert "dssfs - mount a Dataiku DSS instance as a directory tree" in r.stdout
    assert "dssfs %s" % changelog_version() in r.stdout      # the footer
    with gzip.open("/usr/share/doc/dssfs/README.md.gz", "rt") as f:
        assert f.read() == (REPO / "README.md").read_text()


@needs_package
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_installed_unit_passes_systemd_analyze_verify():
    """The installed unit, as is (its ExecStart, its man page), for an instance."""
    r = subprocess.run(["systemd-analyze", "verify", "dssfs@prod.service"],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def _alive(pid: int) -> bool:
    """Running (not gone, nor a zombie its parent has not reaped yet)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _daemon_of(mp: str) -> int | None:
    want = os.fsencode(mp)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dssfs") and want in argv:
            return int(d)
    return None


@needs_package
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                    reason="needs root and util-linux mount")
def test_mount_t_fuse_dssfs_runs_the_installed_binary(emulator, tmp_path, home):
    """`mount -t fuse.dssfs prod MP -o config=...`: mount(8) runs mount.fuse3, whose shell
    finds the installed /usr/bin/dssfs in its default PATH; the files read as DSS has
    them, and `umount` ends the daemon."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"dss_instances": {
        "prod": {"url": emulator.url, "api_key": emulator.admin_key}}}))
    os.chmod(cfg, 0o600)
    mp = tmp_path / "mnt"
    mp.mkdir()
    pid = None
    try:
        r = subprocess.run(["mount", "-t", "fuse.dssfs", "prod", str(mp), "-o",
                            "ro,config=%s,_netdev" % cfg], env=clean_env(home),
                           capture_output=True, text=True, timeout=HANG_GUARD)
        assert r.returncode == 0, r.stderr
        pid = _daemon_of(str(mp))
        assert pid is not None
        assert os.path.realpath("/proc/%d/exe" % pid) == "/usr/bin/dssfs"
        assert json.loads(read_bytes(os.path.join(mp, *SCHEMA))) == \
            emulator.api_get("projects/SALES/datasets/orders/schema")
        r = subprocess.run(["umount", str(mp)], capture_output=True, text=True,
                           timeout=HANG_GUARD)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + HANG_GUARD
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "dssfs did not exit after umount"
    finally:
        if is_mounted(mp):
            unmount(mp)
        if pid is not None and _alive(pid):
            os.kill(pid, 15)
