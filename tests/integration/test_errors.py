"""Failures are errors with the right errno, never empty or partial results, never hangs."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from dssfs_harness import (HANG_GUARD, READER_KEY, assert_errno, errname, errno_of, in_thread,
                           read_bytes, project_names)

SCHEMA = ("SALES", "datasets", "orders", "schema.json")
SCHEMA_RE = r"^/projects/SALES/datasets/orders/schema$"


# --- missing things ----------------------------------------------------------------------

@pytest.mark.parametrize("parts", [
    ("NOPE",),
    ("NOPE", "metadata.json"),
    ("SALES", "nope.json"),
    ("SALES", "datasets", "nope"),
    ("SALES", "datasets", "nope", "schema.json"),
    ("SALES", "datasets", "orders", "nope.json"),
    ("SALES", "datasets", "orders", "schema.json", "x"),
    ("SALES", "recipes", "compute_orders_enriched", "payload.sql"),
    ("SALES", "recipes", "compute_orders_enriched", "payload.json"),
    ("SALES", "scenarios", "DAILY_BUILD", "script.py"),
    ("SALES", "scenarios", "NOPE", "settings.json"),
])
def test_missing_paths_are_enoent(mounted, parts):
    _, m = mounted
    code = errno_of(os.stat, m.path(*parts))
    if parts[-1] == "x":
        assert code == errno.ENOTDIR
    else:
        assert code == errno.ENOENT, errname(code)
        assert errno_of(open, m.path(*parts), "rb") == errno.ENOENT
    r = subprocess.run(["cat", m.path(*parts)], capture_output=True, timeout=30)
    assert r.returncode != 0 and r.stdout == b""


def test_no_dss_object_can_be_created(mounted):
    """mkdir and names DSS objects could have are refused (EPERM); other names are
    local scratch files (README, Editing) that never reach DSS."""
    emu, m = mounted
    emu.reset_stats()
    assert errno_of(os.mkdir, m.path("NEWPROJ")) == errno.EPERM
    assert errno_of(open, m.path("NEWPROJ2"), "w") == errno.EPERM
    assert errno_of(open, m.path("SALES", "datasets", "newds"), "w") == errno.EPERM
    with open(m.path("SALES", "new.txt"), "w") as f:
        f.write("local only")
    assert read_bytes(m.path("SALES", "new.txt")) == b"local only"
    os.unlink(m.path("SALES", "new.txt"))
    assert "NEWPROJ" not in os.listdir(m.mnt)
    assert not [ln for ln in emu.log_lines() if not ln.startswith("GET ")]


# --- rights ------------------------------------------------------------------------------

@pytest.fixture
def reader_mount(emulator_factory, mount_factory):
    emu = emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])
    return emu, mount_factory(emu, key=READER_KEY, expect_errors=True)


def test_a_read_level_key_sees_what_it_can_read_and_its_backup_is_clean(reader_mount, tmp_path):
    """A key that may only read SALES: the project's permissions.json, which DSS refuses
    it (403, logged once as information), is not shown, so `rsync -a` of the whole mount
    exits 0 (it exited 23 on that one file); everything else is readable."""
    emu, m = reader_mount
    status, body = emu.api_get_raw("projects/SALES/permissions", key=READER_KEY)
    assert status == 403
    assert "permissions.json" not in os.listdir(m.path("SALES"))
    assert errno_of(os.stat, m.path("SALES", "permissions.json")) == errno.ENOENT
    r = subprocess.run(["rsync", "-a", m.mnt + "/", str(tmp_path / "copy")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    copied = tmp_path / "copy" / "SALES"
    assert (copied / "metadata.json").read_bytes() == read_bytes(m.path("SALES", "metadata.json"))
    assert not (copied / "permissions.json").exists()
    log = m.stderr_text()
    assert log.count("GET projects/SALES/permissions: DSS refuses it to this key: not shown") \
        == 1, log
    assert m.error_lines() == []      # an answer, not an error
    assert read_bytes(m.path("SALES", "datasets", "orders", "schema.json"))


def test_an_admin_key_sees_permissions_json(emulator, mount_factory):
    m = mount_factory(emulator)
    assert "permissions.json" in os.listdir(m.path("SALES"))
    assert json.loads(read_bytes(m.path("SALES", "permissions.json")))


def test_forbidden_projects_are_not_listed(reader_mount):
    emu, m = reader_mount
    assert project_names(m.mnt) == ["SALES"]
    assert [p["projectKey"] for p in emu.api_get("projects/", key=READER_KEY)] == ["SALES"]
    assert errno_of(os.stat, m.path("MARKETING")) == errno.ENOENT
    assert errno_of(os.listdir, m.path("MARKETING", "datasets")) == errno.ENOENT


# --- server down ---------------------------------------------------------------------------

@pytest.mark.expect_dssfs_errors
def test_server_down_listing_is_an_error_never_empty(emulator, mount_factory):
    m = mount_factory(emulator, options=["timeout=5", "connect_timeout=2"])
    assert sorted(os.listdir(m.path("SALES", "datasets")))
    emulator.stop()
    m.sighup()
    for parts in ((), ("SALES", "datasets"), ("MARKETING", "recipes")):
        kind, v = in_thread(os.listdir, m.path(*parts))
        assert kind == "err", "listing %s with DSS down returned %r" % (parts, v)
        assert v.errno in (errno.ECONNREFUSED, errno.EIO, errno.EHOSTUNREACH,
                           errno.ETIMEDOUT), errname(v.errno)
    r = subprocess.run(["ls", m.path("SALES", "datasets")], capture_output=True,
                       timeout=HANG_GUARD)
    assert r.returncode != 0 and r.stdout == b""
    kind, v = in_thread(read_bytes, m.path(*SCHEMA))
    assert kind == "err"
    assert "dssfs: error: GET projects/" in m.stderr_text()


# --- injected faults -----------------------------------------------------------------------

@pytest.mark.expect_dssfs_errors
def test_500_with_not_found_error_type_is_enoent(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=SCHEMA_RE, status=500,
                  errorType="com.dataiku.dip.server.controllers.NotFoundException",
                  message="Dataset SALES.orders does not exist")
    emu.reset_stats()
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.ENOENT)
    assert emu.log_lines().count("GET /public/api/projects/SALES/datasets/orders/schema") == 1
    assert "does not exist" in m.stderr_text()


@pytest.mark.expect_dssfs_errors
def test_500_with_security_error_type_is_eacces(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=SCHEMA_RE, status=500,
                  errorType="com.dataiku.dip.security.model.SecurityException",
                  message="You may not read this")
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EACCES)
    assert "You may not read this" in m.stderr_text()
    # errors are not cached: once DSS answers again, the file reads
    emu.clear_faults()
    assert read_bytes(m.path(*SCHEMA))


@pytest.mark.expect_dssfs_errors
def test_502_html_body_is_eio_after_bounded_retries(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=SCHEMA_RE, status=502,
                  raw_body="<html><body><h1>502 Bad Gateway</h1></body></html>")
    emu.reset_stats()
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    # a GET is retried twice by default (-o retries=2) on 502/503/504
    assert emu.log_lines().count("GET /public/api/projects/SALES/datasets/orders/schema") == 3
    assert "502 Bad Gateway" in m.stderr_text()
    emu.clear_faults()
    assert read_bytes(m.path(*SCHEMA))


@pytest.mark.expect_dssfs_errors
def test_retries_option_bounds_the_attempts(emulator, mount_factory):
    m = mount_factory(emulator, options=["retries=0"])
    emulator.add_fault(path_regex=SCHEMA_RE, status=503, message="busy")
    emulator.reset_stats()
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    assert emulator.log_lines().count(
        "GET /public/api/projects/SALES/datasets/orders/schema") == 1


@pytest.mark.expect_dssfs_errors
def test_a_transient_502_is_retried_transparently(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=SCHEMA_RE, status=502, raw_body="<html>busy</html>", count=1)
    emu.reset_stats()
    assert json_columns(read_bytes(m.path(*SCHEMA)))
    assert emu.log_lines().count("GET /public/api/projects/SALES/datasets/orders/schema") == 2


def json_columns(data):
    return json.loads(data)["columns"]


@pytest.mark.expect_dssfs_errors
def test_dropped_connection_is_eio(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=SCHEMA_RE, drop=True)
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    assert "Empty reply from server" in m.stderr_text()


@pytest.mark.expect_dssfs_errors
@pytest.mark.parametrize("retries", [0, 2])
def test_dropped_connection_is_attempted_one_plus_retries_times(emulator, mount_factory,
                                                                 retries):
    """1 + retries attempts, plus one: the first attempt goes out on a kept-alive
    connection, and when the server closes such a connection without answering,
    libcurl resends the request once on a fresh one (as HTTP clients do, since a
    server may close an idle keep-alive connection at any time); later attempts
    use fresh connections, which are not resent."""
    # no prefetch: the listing below must not fetch the schema ahead
    m = mount_factory(emulator, options=["retries=%d" % retries, "prefetch=0"])
    os.listdir(m.path("SALES", "datasets"))  # a keep-alive connection now exists
    emulator.add_fault(path_regex=SCHEMA_RE, drop=True)
    emulator.reset_stats()
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    assert emulator.log_lines() == [
        "GET /public/api/projects/SALES/datasets/orders/schema"] * (1 + retries + 1)


@pytest.mark.expect_dssfs_errors
def test_slow_response_beyond_timeout_is_an_error_in_bounded_time(emulator, mount_factory):
    m = mount_factory(emulator, options=["timeout=1"])
    emulator.add_fault(path_regex=SCHEMA_RE, delay_ms=4000)
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.ETIMEDOUT, errno.EIO)
    emulator.clear_faults()
    assert read_bytes(m.path(*SCHEMA))


@pytest.mark.expect_dssfs_errors
def test_invalid_json_from_server_is_eio_not_partial(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=SCHEMA_RE, status=200, raw_body='{"columns": [{"name": "id"')
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EIO)
    r = subprocess.run(["cat", m.path(*SCHEMA)], capture_output=True, timeout=HANG_GUARD)
    assert r.returncode != 0 and r.stdout == b""
    assert "invalid JSON" in m.stderr_text()
    emu.clear_faults()
    assert json_columns(read_bytes(m.path(*SCHEMA)))


@pytest.mark.expect_dssfs_errors
def test_failing_list_is_an_error_never_an_empty_directory(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=r"^/projects/SALES/datasets/?$", status=500,
                  message="database unavailable")
    assert_errno(in_thread(os.listdir, m.path("SALES", "datasets")), errno.EIO)
    r = subprocess.run(["ls", m.path("SALES", "datasets")], capture_output=True,
                       timeout=HANG_GUARD)
    assert r.returncode != 0 and r.stdout == b""
    assert "database unavailable" in m.stderr_text()


@pytest.mark.expect_dssfs_errors
def test_non_list_answer_to_a_list_is_eio(mounted):
    emu, m = mounted
    emu.add_fault(path_regex=r"^/projects/SALES/recipes/?$", status=200, raw_body='"oops"')
    assert_errno(in_thread(os.listdir, m.path("SALES", "recipes")), errno.EIO)


@pytest.mark.expect_dssfs_errors
def test_response_larger_than_max_response_is_efbig(emulator, mount_factory):
    m = mount_factory(emulator, options=["max_response=1"])
    big = '{"columns": [], "pad": "%s"}' % ("x" * (3 << 19))     # 1.5 MiB
    emulator.add_fault(path_regex=SCHEMA_RE, status=200, raw_body=big)
    assert_errno(in_thread(read_bytes, m.path(*SCHEMA)), errno.EFBIG)
    assert "larger than" in m.stderr_text()
    emulator.clear_faults()
    assert json_columns(read_bytes(m.path(*SCHEMA)))


def test_a_response_within_max_response_is_served(emulator, mount_factory):
    m = mount_factory(emulator, options=["max_response=2"])
    value = {"columns": [{"name": "c%d" % i, "type": "string"} for i in range(3)],
             "pad": "y" * (3 << 19)}
    emulator.add_fault(path_regex=SCHEMA_RE, status=200, raw_body=json.dumps(value))
    data = read_bytes(m.path(*SCHEMA))
    assert json.loads(data) == value and os.stat(m.path(*SCHEMA)).st_size == len(data)
