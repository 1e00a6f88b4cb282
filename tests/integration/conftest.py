"""Fixtures of the dssfs integration tests (see dssfs_harness.py for the machinery).

- ``emulator_factory(args=..., users=..., name=...)``: starts dss_emulator.py on a loopback
  port (``--port 0 --port-file``, ``--log-requests`` into tmp_path); stopped by PID.
- ``emulator``: the demo instance with an admin key (ADMIN_KEY).
- ``mount_factory(emu, options=..., env=..., key=..., creds="env"|None, ...)``: mounts the
  real binary in the foreground, waits for /proc/mounts; finalizer unmounts
  (fusermount3 -u, retried, then -uz), ends the process by PID and fails the test on a
  nonzero exit status, sanitizer reports, or ``dssfs: error:`` lines unless the test is
  marked ``@pytest.mark.expect_dssfs_errors`` or the mount was made with
  ``expect_errors=True``.
- ``mounted``: the demo instance mounted with default options -> (emulator, mount).
- ``home``: an empty HOME for dssfs (so ~/.dataiku/config.json is the test's).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

import pytest

from dssfs_harness import (ADMIN_KEY, READER_KEY, Emulator, Mount, clean_env, dssfs_bin,
                           fixtures_dir)

_counter = itertools.count()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "expect_dssfs_errors: the test provokes 'dssfs: error:' log lines")


@pytest.fixture(scope="session", autouse=True)
def _prerequisites():
    b = dssfs_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail("dssfs binary not found at %s: build it (cmake --build build) or set "
                    "DSSFS_BIN" % b, pytrace=False)
    if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
        pytest.fail("FUSE is not usable here (need /dev/fuse and fusermount3)", pytrace=False)
    yield


def _new_emulator_factory(base_dir):
    started = []

    def make(args=(), users=(), admin_key=ADMIN_KEY, name=None):
        d = base_dir / (name or "emu%d" % next(_counter))
        emu = Emulator(d, args=args, users=users, admin_key=admin_key)
        started.append(emu)
        return emu.start()

    def stop_all():
        for emu in reversed(started):
            emu.stop()

    return make, stop_all


def _new_mount_factory(base_dir, default_home, marker_expects_errors):
    mounts = []

    def make(emu=None, options=(), env=None, key=None, creds="env", args=(),
             expect_errors=None, debug=False, home=None, name=None):
        """Mounts dssfs.  creds="env": DKU_DSS_URL/DKU_API_KEY of ``emu`` (key defaults
        to the emulator's admin key); creds=None: only what ``env``/options give."""
        extra = dict(env or {})
        if creds == "env" and emu is not None:
            extra.setdefault("DKU_DSS_URL", emu.url)
            extra.setdefault("DKU_API_KEY", key or emu.admin_key)
        full_env = clean_env(home or default_home, extra)
        d = base_dir / (name or "mount%d" % next(_counter))
        m = Mount(d, options=options, env=full_env, args=args, debug=debug,
                  expect_errors=marker_expects_errors if expect_errors is None
                  else expect_errors)
        mounts.append(m)
        return m.start()

    def finish_all():
        problems = []
        for m in reversed(mounts):
            try:
                problems += m.finish()
            except Exception as e:  # never leave the others mounted
                problems.append("cleanup of %s raised %r" % (m.mnt, e))
        return problems

    return make, finish_all


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir(exist_ok=True)
    return h


@pytest.fixture
def emulator_factory(tmp_path):
    make, stop_all = _new_emulator_factory(tmp_path)
    yield make
    stop_all()


@pytest.fixture
def emulator(emulator_factory):
    return emulator_factory(name="demo-emulator")


@pytest.fixture
def mount_factory(request, tmp_path, home, emulator_factory):
    # Depends on emulator_factory so that mounts are torn down before emulators.
    expects = request.node.get_closest_marker("expect_dssfs_errors") is not None
    make, finish_all = _new_mount_factory(tmp_path, home, expects)
    yield make
    problems = finish_all()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def mounted(emulator, mount_factory):
    return emulator, mount_factory(emulator)


# --- module-scoped instances for the read-only content checks ---------------------------

INSTANCES = {
    "demo": [],
    # the demo seen by a key that is no instance admin, reads SALES and writes HR_ANALYTICS
    "demo-reader": [],
    "generated": ["--generate", "3,9"],
    "real": None,  # the real DSS project trees, if present
}
INSTANCE_KEYS = {"demo-reader": READER_KEY}
INSTANCE_USERS = {"demo-reader": ["%s:reader:SALES=read,HR_ANALYTICS=write,*=none" % READER_KEY]}


@pytest.fixture(scope="module", params=sorted(INSTANCES))
def instance(request, tmp_path_factory):
    """(name, emulator, mount) of one instance, shared by a module's tests."""
    name = request.param
    args = INSTANCES[name]
    if args is None:
        fx = fixtures_dir()
        if fx is None:
            pytest.skip("real DSS fixture projects not found (set DSSFS_FIXTURES or put "
                        "them at <repo>/../shared/fixtures/dss-projects)")
        args = ["--fixture", str(fx)]
    base = tmp_path_factory.mktemp("inst-" + name)
    home_dir = base / "home"
    home_dir.mkdir()
    make_emu, stop_all = _new_emulator_factory(base)
    make_mount, finish_all = _new_mount_factory(base, home_dir, False)
    try:
        emu = make_emu(args=args, users=INSTANCE_USERS.get(name, ()))
        m = make_mount(emu, key=INSTANCE_KEYS.get(name))
        yield name, emu, m
    finally:
        problems = finish_all()
        stop_all()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """Last resort: no dssfs mount made under this session's temporary folder stays."""
    try:
        base = str(session.config._tmp_path_factory.getbasetemp())
        with open("/proc/mounts") as f:
            lines = f.read().splitlines()
    except (AttributeError, OSError):
        return
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "fuse.dssfs" and fields[1].startswith(base):
            subprocess.run(["fusermount3", "-uz", fields[1]], capture_output=True)
