"""Saving through the mount: editors' and tools' save patterns, validation, conflicts,
scratch files, errors.

Every test drives the real mount with real programs (vim, sed, cp, rsync, the shell) or
Python's open()/os.*, and checks three things where they mean something: what the mount
shows afterwards (content, st_size, st_mtime from the new versionTag), what the emulator
holds (direct API GETs), and the exact PUTs in the emulator's request log.  Never times.

Direct API GETs count as requests: they are taken before ``reset_stats()`` or after the
request-log assertions.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time

import pytest

from dssfs_harness import (HANG_GUARD, READER_KEY, assert_errno, errname, errno_of,
                           expected_tree, in_thread, read_bytes)


SCHEMA = ("SALES", "datasets", "orders", "schema.json")
SCHEMA_EP = "projects/SALES/datasets/orders/schema"
DS_SETTINGS = ("SALES", "datasets", "orders", "settings.json")
DS_SETTINGS_EP = "projects/SALES/datasets/orders"
DS_META = ("SALES", "datasets", "customers", "metadata.json")
DS_META_EP = "projects/SALES/datasets/customers/metadata"
VARIABLES = ("SALES", "variables.json")
VARIABLES_EP = "projects/SALES/variables/"
PY_RECIPE = ("SALES", "recipes", "compute_orders_enriched")
PY_RECIPE_EP = "projects/SALES/recipes/compute_orders_enriched"
PAYLOAD_PY = PY_RECIPE + ("payload.py",)
RECIPE_JSON = PY_RECIPE + ("recipe.json",)
PAYLOAD_SQL = ("SALES", "recipes", "compute_top_customers", "payload.sql")
PAYLOAD_SQL_EP = "projects/SALES/recipes/compute_top_customers"
PAYLOAD_SH = ("MARKETING", "recipes", "export_leads", "payload.sh")
PAYLOAD_SH_EP = "projects/MARKETING/recipes/export_leads"
VISUAL_PAYLOAD = ("SALES", "recipes", "compute_orders_by_day", "payload.json")
VISUAL_EP = "projects/SALES/recipes/compute_orders_by_day"
SCENARIO = ("SALES", "scenarios", "CHECK_ORDERS")
SCENARIO_EP = "projects/SALES/scenarios/CHECK_ORDERS"
SCRIPT = SCENARIO + ("script.py",)


# --- helpers -----------------------------------------------------------------------------

def requests_of(emu, method):
    """Paths (after /public/api/) of the logged requests of one method since the reset."""
    prefix = method + " /public/api/"
    return [ln[len(prefix):] for ln in emu.log_lines() if ln.startswith(prefix)]


def puts(emu):
    return requests_of(emu, "PUT")


def non_gets(emu):
    return [ln for ln in emu.log_lines() if not ln.startswith("GET ")]


def rel(parts):
    return "/".join(parts)


def own_version(parts):
    """Whether the file's st_mtime comes from its own object's versionTag (README "Times":
    dataset and scenario settings.json, a recipe's files); the others take their folder's
    time from the listing above them."""
    return parts[1] == "recipes" or (parts[1] in ("datasets", "scenarios")
                                     and parts[-1] == "settings.json")


def assert_shows_server(emu, m, parts):
    """The mount shows exactly what the emulator holds: content (JSON parsed, text byte
    for byte), st_size, and, for a file with its own versionTag, st_mtime from the new
    versionTag (for the other files see test_folder_time_after_a_save_is_the_new_one)."""
    exp = expected_tree(emu).files[rel(parts)]
    path = m.path(*parts)
    data = read_bytes(path)
    if exp.kind == "json":
        assert json.loads(data) == exp.value
    else:
        assert data == exp.value.encode("utf-8")
    st = os.stat(path)
    assert st.st_size == len(data), (st.st_size, len(data))
    if own_version(parts):
        assert st.st_mtime_ns == exp.mtime_ms * 1_000_000, (st.st_mtime_ns // 1_000_000,
                                                             exp.mtime_ms)
    assert stat.S_IMODE(st.st_mode) == 0o644
    return data


def without_tags(doc):
    return {k: v for k, v in doc.items() if k not in ("versionTag", "creationTag")}


def write_file(path, data: bytes, flags=os.O_WRONLY | os.O_TRUNC):
    """open/write/close, returning close()'s verdict (raises OSError)."""
    fd = os.open(path, flags)
    try:
        os.write(fd, data)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)


def wait_for(predicate, what):
    """Polls until predicate() is true (for RELEASE, which close() does not wait for).
    Bounded by HANG_GUARD; not a time assertion."""
    deadline = time.monotonic() + HANG_GUARD
    while not predicate():
        assert time.monotonic() < deadline, "never happened: " + what
        time.sleep(0.02)


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", HANG_GUARD)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(cmd, **kw)


def schema_edit(text: str) -> str:
    out = text.replace('"bigint"', '"int"')
    assert out != text
    return out


# --- vim ---------------------------------------------------------------------------------

# vim's default 'backupskip' skips backups of files under /tmp, where pytest puts the
# mount; it is emptied so that vim makes its backup (by rename, 'backupcopy=auto') as it
# does for a mount anywhere else.  Everything else is vim's default (swap file in the
# file's folder, the 4913 probe, 'writebackup').
VIMRCS = {
    "vim-defaults": ["-N", "-u", "NONE", "-c",
                     "set swapfile writebackup backupcopy=auto backupskip="],
    "debian-vimrc": ["-u", "/etc/vim/vimrc", "-c", "set backupskip="],
}


VIM_TIMEOUT = 8.0     # vim takes well under a second (also under ASan); beyond: a hang



def run_vim(path, subst, tmp_path, vimrc="vim-defaults", extra=()):
    """vim -es: substitute, record the swap file's name, write and quit."""
    home = tmp_path / "vimhome"
    home.mkdir(exist_ok=True)
    swapname = tmp_path / "swapname"
    argv = (["vim", "-es", "-i", "NONE"] + VIMRCS[vimrc] + list(extra)
            + ["-c", subst,
               "-c", "call writefile([swapname('%%')], '%s')" % swapname,
               "-c", "wq", path])
    env = dict(os.environ, HOME=str(home))
    r = run(argv, env=env, cwd=str(tmp_path), timeout=VIM_TIMEOUT)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return home, swapname.read_text().strip()


@pytest.mark.skipif(not shutil.which("vim"), reason="vim not installed")
@pytest.mark.parametrize("vimrc", sorted(VIMRCS))
def test_vim_saves_schema_json(mounted, tmp_path, vimrc):
    emu, m = mounted
    folder = m.path(*SCHEMA[:-1])
    before = read_bytes(m.path(*SCHEMA)).decode()
    listing = sorted(os.listdir(folder))
    emu.reset_stats()
    _, swap = run_vim(m.path(*SCHEMA), '%s/"bigint"/"int"/', tmp_path, vimrc)
    # the swap file lived in the mount, beside the file (a scratch file)
    assert swap == os.path.join(folder, ".schema.json.swp")
    assert puts(emu) == [SCHEMA_EP]
    assert sorted(os.listdir(folder)) == listing          # no .swp, 4913 or ~ left
    expected = before.replace('"bigint"', '"int"')
    assert emu.api_get(SCHEMA_EP) == json.loads(expected)
    assert assert_shows_server(emu, m, SCHEMA) == expected.encode()


@pytest.mark.skipif(not shutil.which("vim"), reason="vim not installed")
@pytest.mark.parametrize("vimrc", sorted(VIMRCS))
def test_vim_saves_payload_py_and_leaves_the_recipe_part_alone(mounted, tmp_path, vimrc):
    """The save goes through, the recipe part of the document is left alone, and no
    swap, probe or backup file stays behind in the folder."""
    emu, m = mounted
    folder = m.path(*PY_RECIPE)
    before = read_bytes(m.path(*PAYLOAD_PY)).decode()
    recipe_before = without_tags(emu.api_get(PY_RECIPE_EP)["recipe"])
    listing = sorted(os.listdir(folder))
    emu.reset_stats()
    _, swap = run_vim(m.path(*PAYLOAD_PY), "%s/RATES/RATE_TABLE/g", tmp_path, vimrc)
    assert swap == os.path.join(folder, ".payload.py.swp")
    assert puts(emu) == [PY_RECIPE_EP]
    assert sorted(os.listdir(folder)) == listing
    expected = before.replace("RATES", "RATE_TABLE")
    doc = emu.api_get(PY_RECIPE_EP)
    assert doc["payload"] == expected
    assert without_tags(doc["recipe"]) == recipe_before
    assert assert_shows_server(emu, m, PAYLOAD_PY) == expected.encode()


@pytest.mark.skipif(not shutil.which("vim"), reason="vim not installed")
def test_vim_with_backup_keeps_the_original_as_a_scratch_file(mounted, tmp_path):
    """With 'backup' set, vim renames schema.json to schema.json~ and keeps it: the
    rename is a copy (DSS keeps the object), the backup has the old content."""
    emu, m = mounted
    folder = m.path(*SCHEMA[:-1])
    before = read_bytes(m.path(*SCHEMA))
    emu.reset_stats()
    home, _ = run_vim(m.path(*SCHEMA), '%s/"bigint"/"int"/', tmp_path,
                      extra=["-c", "set backup backupdir=."])
    assert puts(emu) == [SCHEMA_EP]
    assert "schema.json~" in os.listdir(folder)
    assert read_bytes(os.path.join(folder, "schema.json~")) == before
    assert not any(n.endswith("~") for n in os.listdir(home))
    assert emu.api_get(SCHEMA_EP) == json.loads(schema_edit(before.decode()))
    os.unlink(os.path.join(folder, "schema.json~"))
    assert "schema.json~" not in os.listdir(folder)
    assert len(puts(emu)) == 1


@pytest.mark.skipif(not shutil.which("vim"), reason="vim not installed")
def test_vim_with_backup_keeps_payload_py_backup_in_the_recipe_folder(mounted, tmp_path):
    emu, m = mounted
    folder = m.path(*PY_RECIPE)
    before = read_bytes(m.path(*PAYLOAD_PY))
    emu.reset_stats()
    home = tmp_path / "vimhome"
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    r = run(["vim", "-es", "-N", "-u", "NONE", "-i", "NONE", "-c",
             "set backup backupdir=. backupskip=", "-c", "%s/RATES/RATE_TABLE/g",
             "-c", "wq", m.path(*PAYLOAD_PY)], env=env, cwd=str(tmp_path),
            timeout=VIM_TIMEOUT)
    assert r.returncode == 0, (r.stdout[-1000:], r.stderr[-1000:])   # E510 today
    assert puts(emu) == [PY_RECIPE_EP]
    assert read_bytes(os.path.join(folder, "payload.py~")) == before


# --- sed -i, truncate-then-write, shell ---------------------------------------------------

@pytest.mark.parametrize("parts,endpoint,script", [
    (SCHEMA, SCHEMA_EP, 's/"bigint"/"int"/'),
    (VARIABLES, VARIABLES_EP, 's/"EUR"/"USD"/'),
    (PAYLOAD_SQL, PAYLOAD_SQL_EP, "s/SELECT/select/"),
])
def test_sed_i(mounted, parts, endpoint, script):
    emu, m = mounted
    folder = m.path(*parts[:-1])
    before = read_bytes(m.path(*parts))
    listing = sorted(os.listdir(folder))
    emu.reset_stats()
    r = run(["sed", "-i", script, m.path(*parts)])
    assert r.returncode == 0, r.stderr
    assert puts(emu) == [endpoint]
    assert sorted(os.listdir(folder)) == listing          # sed's temp file is gone
    expected = run(["sed", script], input=before, stdin=None).stdout
    assert expected != before
    shown = assert_shows_server(emu, m, parts)
    if parts[-1].endswith(".json"):
        assert json.loads(shown) == json.loads(expected)
    else:
        assert shown == expected
        assert emu.api_get(endpoint)["payload"] == expected.decode()


def test_nano_style_truncate_then_write(mounted):
    """nano: open(O_WRONLY|O_TRUNC), write, close."""
    emu, m = mounted
    new = read_bytes(m.path(*PAYLOAD_SQL)).replace(b"365 days", b"30 days")
    emu.reset_stats()
    write_file(m.path(*PAYLOAD_SQL), new)
    assert puts(emu) == [PAYLOAD_SQL_EP]
    assert emu.api_get(PAYLOAD_SQL_EP)["payload"].encode() == new
    assert assert_shows_server(emu, m, PAYLOAD_SQL) == new


def test_vscode_style_ftruncate_write_fsync_close(mounted):
    """VS Code: open(O_RDWR), ftruncate(0), write, fsync, close; fsync saves, close
    sends nothing more."""
    emu, m = mounted
    path = m.path(*DS_META)
    doc = json.loads(read_bytes(path))
    doc["description"] = "Customers, edited in an IDE"
    new = (json.dumps(doc, indent=2) + "\n").encode()
    emu.reset_stats()
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 0)
        assert os.pwrite(fd, new, 0) == len(new)
        assert puts(emu) == []          # nothing before fsync
        os.fsync(fd)
        assert puts(emu) == [DS_META_EP]
    finally:
        os.close(fd)
    m.settle()
    assert puts(emu) == [DS_META_EP]
    assert emu.api_get(DS_META_EP) == doc
    assert assert_shows_server(emu, m, DS_META) == new


def test_shell_redirections(mounted):
    emu, m = mounted
    path = m.path(*PAYLOAD_SH)
    emu.reset_stats()
    r = run(["sh", "-c", 'printf "#!/bin/sh\\necho one\\n" > "$1"', "sh", path])
    assert r.returncode == 0
    assert emu.api_get(PAYLOAD_SH_EP)["payload"] == "#!/bin/sh\necho one\n"
    r = run(["sh", "-c", 'echo two >> "$1"', "sh", path])
    assert r.returncode == 0
    assert puts(emu) == [PAYLOAD_SH_EP, PAYLOAD_SH_EP]
    assert emu.api_get(PAYLOAD_SH_EP)["payload"] == "#!/bin/sh\necho one\ntwo\n"
    assert assert_shows_server(emu, m, PAYLOAD_SH) == b"#!/bin/sh\necho one\ntwo\n"
    r = run(["sh", "-c", 'cat "$1"', "sh", path])
    assert r.stdout == b"#!/bin/sh\necho one\ntwo\n"


@pytest.mark.expect_dssfs_errors
def test_shell_redirection_of_invalid_json_is_refused_though_the_shell_says_ok(mounted):
    """Shells ignore close() errors: the exit status is 0, but nothing is sent."""
    emu, m = mounted
    before = read_bytes(m.path(*SCHEMA))
    server = emu.api_get(SCHEMA_EP)
    emu.reset_stats()
    r = run(["sh", "-c", 'echo "{" > "$1"', "sh", m.path(*SCHEMA)])
    assert r.returncode == 0
    m.settle()
    assert emu.request_count() == 0, emu.log_lines()
    assert "schema.json: not saved: invalid JSON" in m.stderr_text()
    # `: > schema.json` writes nothing: the empty file is refused at its last close
    # (the shell's own; see test_trust.py for a program that sees the error)
    r = run(["sh", "-c", ': > "$1"', "sh", m.path(*SCHEMA)])
    assert r.returncode == 0
    wait_for(lambda: "schema.json: not saved: invalid JSON near line 1"
             in m.stderr_text(), "the refused save at close")
    m.settle()
    assert emu.request_count() == 0, emu.log_lines()
    assert emu.api_get(SCHEMA_EP) == server
    assert read_bytes(m.path(*SCHEMA)) == before


def test_truncation_without_a_write_is_saved_at_release(mounted):
    """`: > payload.sh` opens with O_TRUNC and writes nothing: the empty file is
    saved when the handle is released."""
    emu, m = mounted
    read_bytes(m.path(*PAYLOAD_SH))
    emu.reset_stats()
    r = run(["sh", "-c", ': > "$1"', "sh", m.path(*PAYLOAD_SH)])
    assert r.returncode == 0
    wait_for(lambda: puts(emu), "the save at release")   # RELEASE is asynchronous
    m.settle()
    assert puts(emu) == [PAYLOAD_SH_EP]
    assert emu.api_get(PAYLOAD_SH_EP)["payload"] == ""
    assert assert_shows_server(emu, m, PAYLOAD_SH) == b""


def test_truncate_without_an_open_file_saves_at_once(mounted):
    emu, m = mounted
    before = read_bytes(m.path(*PAYLOAD_SH))
    emu.reset_stats()
    os.truncate(m.path(*PAYLOAD_SH), 10)
    assert puts(emu) == [PAYLOAD_SH_EP]
    assert emu.api_get(PAYLOAD_SH_EP)["payload"].encode() == before[:10]
    assert assert_shows_server(emu, m, PAYLOAD_SH) == before[:10]



@pytest.mark.parametrize("parts", [SCHEMA, VARIABLES, SCRIPT], ids=lambda p: p[-1])
def test_folder_time_after_a_save_is_the_new_one(emulator, mount_factory, parts):
    # attr_timeout=60: the kernel does not look the name up again during the test,
    # so what stat shows is what dssfs answers to GETATTR after the save
    m = mount_factory(emulator, options=["attr_timeout=60"])
    path = m.path(*parts)
    write_file(path, read_bytes(path) + b"\n")
    tree = expected_tree(emulator)
    exp_ms = tree.files[rel(parts)].mtime_ms
    assert exp_ms == tree.dirs[rel(parts[:-1])][1]
    assert os.stat(path).st_size == len(read_bytes(path))
    assert os.stat(path).st_mtime_ns == exp_ms * 1_000_000


# --- rename-based savers, cp, rsync -------------------------------------------------------

def test_python_write_to_temp_then_os_replace(mounted):
    emu, m = mounted
    folder = m.path(*DS_META[:-1])
    doc = json.loads(read_bytes(m.path(*DS_META)))
    listing = sorted(os.listdir(folder))
    doc["tags"] = doc["tags"] + ["replaced"]
    emu.reset_stats()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".metadata.json.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    assert os.path.basename(tmp) in os.listdir(folder)   # a scratch file, listed
    assert puts(emu) == []
    os.replace(tmp, m.path(*DS_META))
    assert puts(emu) == [DS_META_EP]
    assert sorted(os.listdir(folder)) == listing
    assert errno_of(os.stat, tmp) == errno.ENOENT
    assert emu.api_get(DS_META_EP) == doc
    assert_shows_server(emu, m, DS_META)


def test_cp_over_a_file(mounted, tmp_path):
    emu, m = mounted
    src = tmp_path / "payload.py"
    new = read_bytes(m.path(*PAYLOAD_PY)) + b"\nprint('done')\n"
    src.write_bytes(new)
    emu.reset_stats()
    r = run(["cp", str(src), m.path(*PAYLOAD_PY)])
    assert r.returncode == 0, r.stderr
    assert puts(emu) == [PY_RECIPE_EP]
    assert emu.api_get(PY_RECIPE_EP)["payload"].encode() == new
    assert assert_shows_server(emu, m, PAYLOAD_PY) == new


def test_rsync_of_a_changed_file_into_the_mount(mounted, tmp_path):
    """Backup with rsync -a, edit the copy, rsync -a it back: only the changed file is
    sent (rsync's temp file + rename), nothing is deleted."""
    emu, m = mounted
    folder = m.path(*PAYLOAD_SQL[:-1])
    local = tmp_path / "copy"
    r = run(["rsync", "-a", folder + "/", str(local) + "/"])
    assert r.returncode == 0, r.stderr
    listing = sorted(os.listdir(folder))
    assert sorted(os.listdir(local)) == listing
    edited = (local / "payload.sql").read_bytes().replace(b"LIMIT 100", b"LIMIT 10")
    assert edited != (local / "payload.sql").read_bytes()
    (local / "payload.sql").write_bytes(edited)
    recipe_before = without_tags(emu.api_get(PAYLOAD_SQL_EP)["recipe"])
    emu.reset_stats()
    r = run(["rsync", "-a", "--itemize-changes", str(local) + "/", folder + "/"])
    assert r.returncode == 0, r.stderr
    assert b"payload.sql" in r.stdout and b"recipe.json" not in r.stdout
    assert puts(emu) == [PAYLOAD_SQL_EP]
    assert sorted(os.listdir(folder)) == listing
    doc = emu.api_get(PAYLOAD_SQL_EP)
    assert doc["payload"].encode() == edited
    assert without_tags(doc["recipe"]) == recipe_before
    assert assert_shows_server(emu, m, PAYLOAD_SQL) == edited


# --- validation: nothing is sent ---------------------------------------------------------

INVALID = [
    (SCHEMA, SCHEMA_EP, b'{"columns": [', "schema-not-json"),
    (SCHEMA, SCHEMA_EP, b'[{"columns": []}]\n', "schema-array"),
    (SCHEMA, SCHEMA_EP, b'{"userModified": true}\n', "schema-no-columns"),
    (SCHEMA, SCHEMA_EP, b'{"columns": []} {}\n', "schema-trailing-text"),
    (VARIABLES, VARIABLES_EP, b'{"standard": {}}\n', "variables-no-local"),
    (VARIABLES, VARIABLES_EP, b'{"local": {}}\n', "variables-no-standard"),
    (DS_SETTINGS, DS_SETTINGS_EP, b'"a string"\n', "settings-string"),
    (DS_META, DS_META_EP, b"{\"label\": \"customers\"}\x00\n", "metadata-nul"),
    (PAYLOAD_PY, PY_RECIPE_EP, b"print('caf\xe9')\n", "payload-latin1"),
    (PAYLOAD_PY, PY_RECIPE_EP, b"x = 1\x00\n", "payload-nul"),
    (PAYLOAD_SQL, PAYLOAD_SQL_EP, b"select '\xed\xa0\x80'\n", "payload-surrogate"),
    (SCRIPT, SCENARIO_EP + "/payload", b"\xff\xfe", "script-not-utf8"),
    (VISUAL_PAYLOAD, VISUAL_EP, b'{"keys": [', "visual-payload-not-json"),
]


@pytest.mark.expect_dssfs_errors
def test_invalid_content_is_einval_and_nothing_is_sent(mounted):
    """Each case: Python open/write/close; close() raises EINVAL, no request at all
    reaches DSS, the reason is logged, DSS and the mount keep the old content."""
    emu, m = mounted
    problems = []
    for parts, endpoint, content, case in INVALID:
        path = m.path(*parts)
        server = emu.api_get(endpoint)
        before = read_bytes(path)
        log_before = m.stderr_text().count("/%s: not saved" % rel(parts))
        emu.reset_stats()
        f = open(path, "wb")
        f.write(content)
        try:
            f.close()
            problems.append("%s: close() succeeded" % case)
        except OSError as e:
            if e.errno != errno.EINVAL:
                problems.append("%s: close() gave %s" % (case, errname(e.errno)))
        m.settle()
        if emu.request_count():
            problems.append("%s: requests sent: %s" % (case, emu.log_lines()))
        if m.stderr_text().count("/%s: not saved" % rel(parts)) != log_before + 1:
            problems.append("%s: the refusal is not logged once" % case)
        if emu.api_get(endpoint) != server:
            problems.append("%s: DSS changed" % case)
        if read_bytes(path) != before or os.stat(path).st_size != len(before):
            problems.append("%s: the mount does not show the old content" % case)
    assert not problems, "\n".join(problems)


@pytest.mark.expect_dssfs_errors
def test_dss_refusal_is_einval_and_the_buffer_can_be_fixed_and_saved_again(mounted):
    """DSS answers 400 to a renamed dataset: EINVAL from fsync, nothing changed; the
    handle keeps the user's text, and after fixing it the same handle saves."""
    emu, m = mounted
    path = m.path(*DS_SETTINGS)
    server = emu.api_get(DS_SETTINGS_EP)
    emu.reset_stats()
    fd = os.open(path, os.O_RDWR)
    try:
        doc = json.loads(os.read(fd, 1 << 20))
        doc["name"] = "orders_renamed"
        doc["description"] = "fixed"
        bad = (json.dumps(doc, indent=2) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, bad, 0)
        assert_errno(in_thread(os.fsync, fd), errno.EINVAL)
        assert puts(emu) == [DS_SETTINGS_EP]
        assert emu.api_get(DS_SETTINGS_EP) == server
        assert os.pread(fd, len(bad) + 10, 0) == bad          # the buffer is kept
        doc["name"] = "orders"
        good = (json.dumps(doc, indent=2) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, good, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    m.settle()
    assert puts(emu) == [DS_SETTINGS_EP, DS_SETTINGS_EP]
    assert "IllegalArgumentException" in m.stderr_text()
    assert without_tags(emu.api_get(DS_SETTINGS_EP)) == without_tags(doc)
    assert_shows_server(emu, m, DS_SETTINGS)


PUT_FAILURES = [
    pytest.param({"status": 502, "raw_body": "<html>Bad Gateway</html>"}, errno.EIO,
                 "Bad Gateway", id="502-html"),
    pytest.param({"status": 500, "message": "database locked"}, errno.EIO,
                 "database locked", id="500"),
    pytest.param({"status": 500, "message": "no rights here",
                  "errorType": "com.dataiku.dip.security.model.SecurityException"},
                 errno.EACCES, "no rights here", id="500-SecurityException"),
    pytest.param({"status": 404, "message": "recipe does not exist"}, errno.ENOENT,
                 "recipe does not exist", id="404"),
    pytest.param({"status": 409, "message": "locked by another user"}, errno.EBUSY,
                 "locked by another user", id="409"),
    pytest.param({"status": 413, "message": "too big"}, errno.EFBIG, "too big", id="413"),
    pytest.param({"status": 429, "message": "slow down"}, errno.EAGAIN, "slow down",
                 id="429"),
]


@pytest.mark.expect_dssfs_errors
@pytest.mark.parametrize("fault,code,message", PUT_FAILURES)
def test_a_failing_put_is_reported_and_not_repeated(mounted, fault, code, message):
    """DSS's refusal is close()'s errno, its message is logged; the PUT is sent once
    (reads are retried, saves never), and DSS and the mount keep the old content."""
    emu, m = mounted
    server = emu.api_get(PY_RECIPE_EP)
    before = read_bytes(m.path(*PAYLOAD_PY))
    emu.add_fault(method="PUT", path_regex=r"^/projects/SALES/recipes/", **fault)
    emu.reset_stats()
    assert_errno(in_thread(write_file, m.path(*PAYLOAD_PY), before + b"# more\n"), code)
    assert puts(emu) == [PY_RECIPE_EP]
    assert message in m.stderr_text()
    emu.clear_faults()
    assert emu.api_get(PY_RECIPE_EP) == server
    assert assert_shows_server(emu, m, PAYLOAD_PY) == before


def test_a_file_larger_than_max_response_is_efbig(emulator, mount_factory):
    """Writing beyond max_response fails with EFBIG (the kernel may first accept a short
    write); an editor that then restores the old text sends nothing."""
    m = mount_factory(emulator, options=["max_response=1"])
    before = read_bytes(m.path(*PAYLOAD_PY))
    server = emulator.api_get(PY_RECIPE_EP)
    emulator.reset_stats()
    fd = os.open(m.path(*PAYLOAD_PY), os.O_RDWR)
    try:
        big, off, code = b"#" * (2 << 20), 0, None
        while off < len(big) and code is None:
            try:
                off += os.pwrite(fd, big[off:], off)
            except OSError as e:
                code = e.errno
        assert code == errno.EFBIG and off <= 1 << 20
        os.ftruncate(fd, 0)
        os.pwrite(fd, before, 0)
    finally:
        os.close(fd)
    m.settle()
    assert non_gets(emulator) == []
    assert emulator.api_get(PY_RECIPE_EP) == server


# --- rights ------------------------------------------------------------------------------

@pytest.mark.expect_dssfs_errors
def test_a_read_level_key_gets_eacces_and_nothing_changes(emulator_factory, mount_factory):
    emu = emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])
    m = mount_factory(emu, key=READER_KEY)
    path = m.path(*SCHEMA)
    before = read_bytes(path)
    server = emu.api_get(SCHEMA_EP)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644   # only DSS knows the rights
    emu.reset_stats()
    assert_errno(in_thread(write_file, path, schema_edit(before.decode()).encode()),
                 errno.EACCES)
    assert puts(emu) == [SCHEMA_EP]
    assert "SecurityException" in m.stderr_text()
    assert emu.api_get(SCHEMA_EP) == server
    assert read_bytes(path) == before


# --- conflicts ---------------------------------------------------------------------------

def _someone_else_changes_the_schema(emu):
    other = emu.api_get(SCHEMA_EP)
    other["columns"].append({"name": "added_by_someone_else", "type": "string"})
    status, body = emu.request("PUT", "/public/api/" + SCHEMA_EP, body=other,
                               key=emu.admin_key)
    assert status == 200, body
    return other


@pytest.mark.expect_dssfs_errors
def test_concurrent_change_is_estale_then_reread_and_save_works(mounted):
    emu, m = mounted
    path = m.path(*SCHEMA)
    fd = os.open(path, os.O_RDWR)
    mine = schema_edit(os.read(fd, 1 << 20).decode()).encode()
    other = _someone_else_changes_the_schema(emu)
    emu.reset_stats()
    os.ftruncate(fd, 0)
    os.pwrite(fd, mine, 0)
    assert_errno(in_thread(os.close, fd), errno.ESTALE)
    assert puts(emu) == []
    assert emu.api_get(SCHEMA_EP) == other                  # DSS keeps their change
    assert "schema.json: not saved: it was changed on DSS since you read it" \
        in m.stderr_text()
    # read again (vim's :e!), redo the change, save
    again = read_bytes(path)
    assert json.loads(again) == other
    emu.reset_stats()
    write_file(path, schema_edit(again.decode()).encode())
    assert puts(emu) == [SCHEMA_EP]
    assert emu.api_get(SCHEMA_EP) == json.loads(schema_edit(again.decode()))
    assert_shows_server(emu, m, SCHEMA)


@pytest.mark.expect_dssfs_errors
def test_concurrent_change_refuses_a_rename_save_too(mounted):
    """sed -i: read, someone saves, rename(temp -> file) is refused; the temp file
    stays a scratch file and nothing is sent."""
    emu, m = mounted
    folder = m.path(*PAYLOAD_SQL[:-1])
    text = read_bytes(m.path(*PAYLOAD_SQL))
    doc = emu.api_get(PAYLOAD_SQL_EP)
    doc["payload"] = doc["payload"] + "-- theirs\n"
    assert emu.request("PUT", "/public/api/" + PAYLOAD_SQL_EP, body=doc,
                       key=emu.admin_key)[0] == 200
    emu.reset_stats()
    tmp = os.path.join(folder, "sedAbC123")
    with open(tmp, "wb") as f:
        f.write(text + b"-- mine\n")
    assert errno_of(os.rename, tmp, m.path(*PAYLOAD_SQL)) == errno.ESTALE
    assert puts(emu) == []
    assert os.path.exists(tmp)
    assert emu.api_get(PAYLOAD_SQL_EP)["payload"] == doc["payload"]
    os.unlink(tmp)


def test_last_writer_wins_saves_over_a_concurrent_change(emulator, mount_factory):
    m = mount_factory(emulator, options=["last_writer_wins"])
    path = m.path(*SCHEMA)
    with open(path, "r+b") as f:
        mine = schema_edit(f.read().decode()).encode()
        _someone_else_changes_the_schema(emulator)
        emulator.reset_stats()
        f.seek(0)
        f.write(mine)
        f.truncate()
    assert puts(emulator) == [SCHEMA_EP]
    assert emulator.api_get(SCHEMA_EP) == json.loads(mine)
    assert assert_shows_server(emulator, m, SCHEMA) == mine


@pytest.mark.expect_dssfs_errors
def test_files_of_one_dataset_do_not_conflict_with_each_other(mounted):
    """schema.json and metadata.json have no versionTag of their own: each is checked
    by its own content, so saving one (which moves the dataset's version) does not
    block saving the other, read before it (two editor buffers)."""
    emu, m = mounted
    schema_p, meta_p = m.path(*SCHEMA), m.path("SALES", "datasets", "orders",
                                               "metadata.json")
    fd_s = os.open(schema_p, os.O_RDWR)
    fd_m = os.open(meta_p, os.O_RDWR)
    try:
        schema = os.read(fd_s, 1 << 20)
        meta = json.loads(os.read(fd_m, 1 << 20))
        meta["description"] = "edited in a second buffer"
        new_meta = (json.dumps(meta, indent=2) + "\n").encode()
        emu.reset_stats()
        os.ftruncate(fd_s, 0)
        os.pwrite(fd_s, schema_edit(schema.decode()).encode(), 0)
        os.fsync(fd_s)
        os.ftruncate(fd_m, 0)
        os.pwrite(fd_m, new_meta, 0)
        os.fsync(fd_m)
    finally:
        os.close(fd_s)
        os.close(fd_m)
    assert puts(emu) == [SCHEMA_EP, "projects/SALES/datasets/orders/metadata"]
    assert emu.api_get("projects/SALES/datasets/orders/metadata") == meta
    assert emu.api_get(SCHEMA_EP) == json.loads(schema_edit(schema.decode()))


@pytest.mark.expect_dssfs_errors
def test_files_of_one_document_saved_by_one_process_both_land(mounted):
    """recipe.json and payload.py are two parts of one document with one versionTag.
    One process (an IDE) read both and saves both: its own first save is not a conflict
    for its second, and both edits land (two PUTs, each on top of the other)."""
    emu, m = mounted
    recipe_p = m.path(*PY_RECIPE, "recipe.json")
    fd_p = os.open(m.path(*PAYLOAD_PY), os.O_RDWR)
    fd_r = os.open(recipe_p, os.O_RDWR)
    try:
        payload = os.read(fd_p, 1 << 20)
        recipe = json.loads(os.read(fd_r, 1 << 20))
        recipe["tags"] = ["edited-in-a-second-buffer"]
        new_recipe = (json.dumps(recipe, indent=2) + "\n").encode()
        emu.reset_stats()
        os.ftruncate(fd_p, 0)
        os.pwrite(fd_p, payload + b"# one more line\n", 0)
        os.fsync(fd_p)
        os.ftruncate(fd_r, 0)
        os.pwrite(fd_r, new_recipe, 0)
        os.fsync(fd_r)
        assert puts(emu) == [PY_RECIPE_EP, PY_RECIPE_EP]
    finally:
        os.close(fd_p)
        os.close(fd_r)
    doc = emu.api_get(PY_RECIPE_EP)
    assert doc["recipe"]["tags"] == recipe["tags"]
    assert doc["payload"].encode() == payload + b"# one more line\n"


@pytest.mark.expect_dssfs_errors
def test_a_sibling_saved_by_another_process_is_a_conflict(mounted):
    """Process A read recipe.json; process B saves payload.py (the same document's
    version moves); A's save of recipe.json is refused until A reads it again."""
    emu, m = mounted
    recipe_p = m.path(*PY_RECIPE, "recipe.json")
    fd_r = os.open(recipe_p, os.O_RDWR)
    try:
        recipe = json.loads(os.read(fd_r, 1 << 20))
        recipe["tags"] = ["edited-in-a-second-buffer"]
        payload = read_bytes(m.path(*PAYLOAD_PY))
        emu.reset_stats()
        r = run(["sh", "-c", 'printf "# more\\n" >> "$1"', "sh", m.path(*PAYLOAD_PY)])
        assert r.returncode == 0
        assert puts(emu) == [PY_RECIPE_EP]
        os.ftruncate(fd_r, 0)
        os.pwrite(fd_r, (json.dumps(recipe, indent=2) + "\n").encode(), 0)
        assert_errno(in_thread(os.fsync, fd_r), errno.ESTALE)
        assert puts(emu) == [PY_RECIPE_EP]
    finally:
        closed = in_thread(os.close, fd_r)
    assert_errno(closed, errno.ESTALE)
    # read again (vim's :e!), redo, save
    fresh = json.loads(read_bytes(recipe_p))
    fresh["tags"] = recipe["tags"]
    write_file(recipe_p, (json.dumps(fresh, indent=2) + "\n").encode())
    assert puts(emu) == [PY_RECIPE_EP, PY_RECIPE_EP]
    doc = emu.api_get(PY_RECIPE_EP)
    assert doc["recipe"]["tags"] == recipe["tags"]
    assert doc["payload"].encode() == payload + b"# more\n"


def test_saving_twice_through_one_handle(mounted):
    """An editor that keeps its file open and saves twice (write, fsync, write, fsync):
    the second save is checked against the version the first one made."""
    emu, m = mounted
    path = m.path(*PAYLOAD_SQL)
    before = read_bytes(path)
    emu.reset_stats()
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, before + b"-- one\n", 0)
        os.fsync(fd)
        os.pwrite(fd, b"-- two\n", len(before) + 7)
        os.fsync(fd)
        assert os.pread(fd, 1 << 20, 0) == before + b"-- one\n-- two\n"
    finally:
        os.close(fd)
    m.settle()
    assert puts(emu) == [PAYLOAD_SQL_EP, PAYLOAD_SQL_EP]
    assert emu.api_get(PAYLOAD_SQL_EP)["payload"].encode() == before + b"-- one\n-- two\n"
    assert_shows_server(emu, m, PAYLOAD_SQL)


@pytest.mark.expect_dssfs_errors
def test_cp_over_a_file_never_read_is_not_a_conflict(mounted, tmp_path):
    emu, m = mounted
    os.stat(m.path(*DS_META[:-1], "settings.json"))   # `ls -l` of the folder
    theirs = emu.api_get(DS_META_EP)
    theirs["description"] = "changed on DSS"
    assert emu.request("PUT", "/public/api/" + DS_META_EP, body=theirs,
                       key=emu.admin_key)[0] == 200
    mine = dict(theirs, description="restored from a backup")
    src = tmp_path / "metadata.json"
    src.write_text(json.dumps(mine, indent=2) + "\n")
    emu.reset_stats()
    r = run(["cp", str(src), m.path(*DS_META)])
    assert r.returncode == 0, r.stderr
    assert emu.api_get(DS_META_EP) == mine


# --- DSS down ----------------------------------------------------------------------------

@pytest.mark.expect_dssfs_errors
def test_save_while_dss_is_down_fails_in_bounded_time_and_retries_later(emulator,
                                                                       emulator_factory,
                                                                       mount_factory):
    """DSS stops between reading and saving: close() and fsync() fail (nothing can have
    been sent); once DSS is back on its port, fsync() on the same handle saves the
    buffer."""
    emu = emulator
    m = mount_factory(emu, options=["timeout=5", "connect_timeout=2"])
    port = emu.port
    meta = json.loads(read_bytes(m.path(*DS_META)))
    meta["description"] = "saved after the outage"
    new_meta = (json.dumps(meta, indent=2) + "\n").encode()
    payload = read_bytes(m.path(*PAYLOAD_PY)) + b"# after the outage\n"
    fd_meta = os.open(m.path(*DS_META), os.O_WRONLY | os.O_TRUNC)
    fd_py = os.open(m.path(*PAYLOAD_PY), os.O_RDWR)
    try:
        os.write(fd_meta, new_meta)
        os.ftruncate(fd_py, 0)
        os.pwrite(fd_py, payload, 0)
        emu.reset_stats()
        emu.stop()
        down = (errno.ECONNREFUSED, errno.EIO, errno.ETIMEDOUT, errno.EHOSTUNREACH)
        assert_errno(in_thread(os.close, fd_meta), *down)
        fd_meta = None
        assert_errno(in_thread(os.fsync, fd_py), *down)
        assert non_gets(emu) == []       # the log survives the process: no PUT reached it
        # DSS is back (a fresh instance on the same port, in the state before the save)
        back = emulator_factory(args=["--port", str(port)], name="emu-back")
        assert back.port == port
        assert back.api_get(DS_META_EP)["description"] != meta["description"]
        back.reset_stats()
        assert in_thread(os.fsync, fd_py)[0] == "ok"
        assert puts(back) == [PY_RECIPE_EP]
    finally:
        for fd in (fd_meta, fd_py):
            if fd is not None:
                os.close(fd)
    m.settle()
    assert puts(back) == [PY_RECIPE_EP]      # the close after fsync sent nothing more
    assert back.api_get(PY_RECIPE_EP)["payload"].encode() == payload
    assert "Connection refused" in m.stderr_text()


# --- many writers ------------------------------------------------------------------------

def test_sixteen_parallel_writers_each_save_once(emulator_factory, mount_factory):
    emu = emulator_factory(args=["--generate", "2,8"])
    m = mount_factory(emu)
    files = [("GEN%03d" % p, "ds_%03d" % d) for p in (1, 2) for d in range(8)]
    barrier = threading.Barrier(len(files))
    errors = []
    docs = {}
    for k, ds in files:
        doc = json.loads(read_bytes(m.path(k, "datasets", ds, "metadata.json")))
        doc["description"] = "written by thread %s/%s" % (k, ds)
        docs[(k, ds)] = doc
    emu.reset_stats()

    def writer(k, ds):
        try:
            data = (json.dumps(docs[(k, ds)], indent=2) + "\n").encode()
            barrier.wait(timeout=30)
            with open(m.path(k, "datasets", ds, "metadata.json"), "wb") as f:
                f.write(data)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((k, ds, e))

    threads = [threading.Thread(target=writer, args=kd) for kd in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD)
    assert not any(t.is_alive() for t in threads), "writers hung"
    assert not errors, errors
    counts = collections.Counter(puts(emu))
    assert counts == collections.Counter(
        "projects/%s/datasets/%s/metadata" % kd for kd in files)
    for (k, ds), doc in docs.items():
        assert emu.api_get("projects/%s/datasets/%s/metadata" % (k, ds)) == doc
        assert json.loads(read_bytes(m.path(k, "datasets", ds, "metadata.json"))) == doc


# --- parts of objects, repeated and identical saves -------------------------------------

def test_recipe_json_save_keeps_the_payload(mounted):
    emu, m = mounted
    payload_before = emu.api_get(PY_RECIPE_EP)["payload"]
    recipe = json.loads(read_bytes(m.path(*RECIPE_JSON)))
    recipe["tags"] = ["edited"]
    recipe["maxRunningActivities"] = 2
    emu.reset_stats()
    with open(m.path(*RECIPE_JSON), "w") as f:
        json.dump(recipe, f, indent=2)
    assert puts(emu) == [PY_RECIPE_EP]            # one {recipe, payload} envelope
    doc = emu.api_get(PY_RECIPE_EP)
    assert doc["payload"] == payload_before
    assert without_tags(doc["recipe"]) == without_tags(recipe)
    assert doc["recipe"]["versionTag"]["versionNumber"] == \
        recipe["versionTag"]["versionNumber"] + 1
    assert_shows_server(emu, m, RECIPE_JSON)
    assert_shows_server(emu, m, PAYLOAD_PY)


def test_visual_recipe_payload_json_saves(mounted):
    emu, m = mounted
    recipe_before = without_tags(emu.api_get(VISUAL_EP)["recipe"])
    payload = json.loads(read_bytes(m.path(*VISUAL_PAYLOAD)))
    payload["keys"].append({"column": "customer_id"})
    text = json.dumps(payload, indent=2) + "\n"
    emu.reset_stats()
    with open(m.path(*VISUAL_PAYLOAD), "w") as f:
        f.write(text)
    assert puts(emu) == [VISUAL_EP]
    doc = emu.api_get(VISUAL_EP)
    assert doc["payload"] == text             # kept as the text written
    assert without_tags(doc["recipe"]) == recipe_before
    assert_shows_server(emu, m, VISUAL_PAYLOAD)


def test_scenario_script_saves_through_the_payload_endpoint(mounted):
    emu, m = mounted
    settings_before = without_tags(emu.api_get(SCENARIO_EP))
    new = read_bytes(m.path(*SCRIPT)) + b"scenario.set_scenario_variables(edited=True)\n"
    emu.reset_stats()
    write_file(m.path(*SCRIPT), new)
    assert puts(emu) == [SCENARIO_EP + "/payload"]
    assert emu.api_get(SCENARIO_EP + "/payload") == {"script": new.decode()}
    assert without_tags(emu.api_get(SCENARIO_EP)) == settings_before
    assert assert_shows_server(emu, m, SCRIPT) == new
    assert_shows_server(emu, m, SCENARIO + ("settings.json",))


def test_flushing_a_dup_twice_sends_one_put(mounted):
    emu, m = mounted
    new = read_bytes(m.path(*PAYLOAD_SQL)) + b"-- dup\n"
    emu.reset_stats()
    fd = os.open(m.path(*PAYLOAD_SQL), os.O_WRONLY | os.O_TRUNC)
    fd2 = os.dup(fd)
    os.write(fd, new)
    os.close(fd2)  # not the last descriptor of this process: nothing is saved yet
    assert puts(emu) == []
    os.close(fd)
    m.settle()
    assert puts(emu) == [PAYLOAD_SQL_EP]
    assert emu.api_get(PAYLOAD_SQL_EP)["payload"].encode() == new


def test_identical_content_sends_no_put(mounted):
    """An editor's :w without a change, and a rename-based rewrite (sed -i) of the same
    bytes: GETs for the comparison, no PUT."""
    emu, m = mounted
    for parts in (SCHEMA, VARIABLES, DS_SETTINGS, PAYLOAD_PY, RECIPE_JSON, VISUAL_PAYLOAD,
                  SCRIPT):
        path = m.path(*parts)
        before = read_bytes(path)
        emu.reset_stats()
        write_file(path, before)
        r = run(["sed", "-i", "s/^//", path])
        assert r.returncode == 0, r.stderr
        m.settle()
        assert non_gets(emu) == [], parts
        assert read_bytes(path) == before, parts


# --- scratch files and what is not done through the mount --------------------------------

SCRATCH = b"scratch \x00\xff bytes"        # any bytes: scratch files are never validated


def _scratch_lifecycle(m, folder, name):
    """create, write, fsync, read, stat, chmod, utime, list, append, rename, unlink."""
    listing = sorted(os.listdir(folder))
    p = os.path.join(folder, name)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, SCRATCH)
        os.fsync(fd)
        assert os.pread(fd, 100, 0) == SCRATCH
    finally:
        os.close(fd)
    st = os.stat(p)
    assert st.st_size == len(SCRATCH) and stat.S_IMODE(st.st_mode) == 0o600
    os.chmod(p, 0o644)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    os.utime(p, (1_600_000_000, 1_600_000_000))
    assert os.stat(p).st_mtime == 1_600_000_000
    assert sorted(os.listdir(folder)) == sorted(listing + [name])
    with open(p, "ab") as f:
        f.write(b"!")
    assert read_bytes(p) == SCRATCH + b"!"
    p2 = os.path.join(folder, name + ".moved")
    os.rename(p, p2)
    assert read_bytes(p2) == SCRATCH + b"!"
    assert errno_of(os.stat, p) == errno.ENOENT
    os.unlink(p2)
    assert errno_of(os.stat, p2) == errno.ENOENT
    assert sorted(os.listdir(folder)) == listing


SCRATCH_NAMES = {
    PY_RECIPE: [".payload.py.swp", ".payload.py.swx", "4913", "recipe.json~",
                "#payload.py#", "#recipe.json#", ".#recipe.json", "sedXy12Ab",
                ".payload.py.a1B2c3", "notes.txt"],
    SCHEMA[:-1]: [".schema.json.swp", "4913", "schema.json~", "#schema.json#",
                  "tmpk2j4h1", "schema.json.orig"],
    SCENARIO: [".script.py.swp", "script.py~", "4913"],
    ("SALES",): [".variables.json.swp", "variables.json~", "4913"],
}


def test_scratch_files_live_in_the_mount_and_never_reach_dss(mounted):
    emu, m = mounted
    for folder in SCRATCH_NAMES:
        os.listdir(m.path(*folder))
    emu.reset_stats()
    for folder, names in SCRATCH_NAMES.items():
        for name in names:
            _scratch_lifecycle(m, m.path(*folder), name)
    assert non_gets(emu) == []


def test_payload_backup_name_is_a_scratch_file(mounted):
    emu, m = mounted
    os.listdir(m.path(*PY_RECIPE))
    emu.reset_stats()
    _scratch_lifecycle(m, m.path(*PY_RECIPE), "payload.py~")
    assert non_gets(emu) == []


def test_scratch_files_are_bounded_by_scratch_max(emulator, mount_factory):
    m = mount_factory(emulator, options=["scratch_max=1"])
    p = m.path(*PY_RECIPE, ".payload.py.swp")
    f = open(p, "wb")
    f.write(b"x" * (2 << 20))
    with pytest.raises(OSError) as ei:
        f.close()
    assert ei.value.errno == errno.ENOSPC
    os.unlink(p)


def test_creating_a_name_a_dss_object_could_have_is_eperm(mounted):
    emu, m = mounted
    names = [PY_RECIPE + ("payload.R",), PY_RECIPE + ("payload.sql",),
             PY_RECIPE + ("payload.py",), SCHEMA[:-1] + ("schema.json",),
             ("SALES", "datasets", "new_dataset"), ("SALES", "datasets", ".new.swp"),
             ("SALES", "recipes", "new_recipe"), ("SALES", "scenarios", "NEW"),
             ("NEWPROJECT",)]
    listings = {parts[:-1]: sorted(os.listdir(m.path(*parts[:-1]))) for parts in names}
    emu.reset_stats()
    for parts in names:
        exists = parts[-1] in listings[parts[:-1]]
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exists else 0)
        assert errno_of(os.open, m.path(*parts), flags, 0o644) == \
            (errno.EEXIST if exists else errno.EPERM), parts
        assert errno_of(os.mkdir, m.path(*parts)) == \
            (errno.EEXIST if exists else errno.EPERM), parts
    for folder, listing in listings.items():
        assert sorted(os.listdir(m.path(*folder))) == listing
    assert non_gets(emu) == []


def test_dss_objects_are_never_deleted_linked_or_made(mounted):
    emu, m = mounted
    listing = sorted(os.listdir(m.path(*PY_RECIPE)))
    emu.reset_stats()
    assert errno_of(os.unlink, m.path(*PAYLOAD_PY)) == errno.EPERM
    assert errno_of(os.unlink, m.path(*SCHEMA)) == errno.EPERM
    assert errno_of(os.rmdir, m.path(*PY_RECIPE)) == errno.EPERM
    assert errno_of(os.rmdir, m.path("SALES", "datasets", "orders")) == errno.EPERM
    assert errno_of(os.mkdir, m.path(*PY_RECIPE, "sub")) == errno.EPERM
    assert errno_of(os.link, m.path(*PAYLOAD_PY), m.path(*PY_RECIPE, "hard")) == errno.EPERM
    assert errno_of(os.symlink, "payload.py", m.path(*PY_RECIPE, "soft")) == errno.EPERM
    r = run(["rm", "-f", m.path(*PAYLOAD_PY)])
    assert r.returncode != 0
    assert non_gets(emu) == []
    assert sorted(os.listdir(m.path(*PY_RECIPE))) == listing
    assert read_bytes(m.path(*PAYLOAD_PY)).decode() == emu.api_get(PY_RECIPE_EP)["payload"]


@pytest.mark.parametrize("parts,backup", [
    (SCHEMA, "schema.json~"),
    (SCHEMA, ".schema.json.orig"),
    (RECIPE_JSON, "recipe.json~"),
    (PAYLOAD_PY, "#payload.py#"),
    (SCRIPT, "script.py.bak"),
    pytest.param(PAYLOAD_PY, "payload.py~",
                 ),
], ids=lambda v: v if isinstance(v, str) else v[-1])
def test_renaming_a_dss_file_away_copies_it(mounted, parts, backup):
    emu, m = mounted
    folder = m.path(*parts[:-1])
    before = read_bytes(m.path(*parts))
    listing = sorted(os.listdir(folder))
    emu.reset_stats()
    os.rename(m.path(*parts), os.path.join(folder, backup))
    assert non_gets(emu) == []
    assert sorted(os.listdir(folder)) == sorted(listing + [backup])
    assert read_bytes(os.path.join(folder, backup)) == before
    assert read_bytes(m.path(*parts)) == before          # still there, still on DSS
    assert_shows_server(emu, m, parts)
    os.unlink(os.path.join(folder, backup))
    assert sorted(os.listdir(folder)) == listing



@pytest.mark.expect_dssfs_errors
def test_rename_then_create_in_the_same_folder_does_not_deadlock(emulator, mount_factory):
    """Deterministic form of the hang vim hits now and then: a single worker (-s), the
    rename's read of DSS slowed down, and a second process already waiting for the
    folder's lock (to create a file) when the rename is answered.  A hung creator is
    killed (that unblocks the mount), then the test fails."""
    m = mount_factory(emulator, args=["-s"], options=["attr_timeout=60"])
    m.check_exit_status = False
    folder = m.path(*SCHEMA[:-1])
    before = read_bytes(m.path(*SCHEMA))
    os.listdir(folder)
    emulator.add_fault(method="GET", path_regex=r"^/projects/SALES/datasets/orders/schema$",
                       delay_ms=1000)
    m.sighup()                                   # the rename must fetch the file
    renamed = {}

    def rename():
        renamed["ret"] = errno_of(os.rename, m.path(*SCHEMA),
                                  os.path.join(folder, "schema.json~"))

    t = threading.Thread(target=rename, daemon=True)
    t.start()
    time.sleep(0.3)          # not a time assertion: lets the rename take the folder lock
    creator = subprocess.Popen(["touch", os.path.join(folder, ".x.tmp")])
    try:
        creator.wait(timeout=4)
    except subprocess.TimeoutExpired:
        creator.kill()                           # its request aborts: the mount recovers
        creator.wait()
    t.join(HANG_GUARD)
    emulator.clear_faults()
    assert renamed.get("ret") is None
    assert creator.returncode == 0, "touch in the folder hung behind the rename's "\
        "notification (killed)"
    assert read_bytes(os.path.join(folder, "schema.json~")) == before
    assert os.path.exists(os.path.join(folder, ".x.tmp"))


def test_chmod_chown_utime_fsync_of_dss_files_succeed_and_send_nothing(mounted):
    emu, m = mounted
    path = m.path(*SCHEMA)
    before = read_bytes(path)
    st = os.stat(path)
    emu.reset_stats()
    os.chmod(path, 0o600)
    os.chown(path, os.getuid(), os.getgid())
    os.utime(path, (1_500_000_000, 1_500_000_000))
    r = run(["touch", path])
    assert r.returncode == 0, r.stderr
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.fdatasync(f.fileno())
    fd = os.open(path, os.O_RDWR)
    os.fsync(fd)
    os.close(fd)
    m.settle()
    assert non_gets(emu) == []
    st2 = os.stat(path)
    # DSS keeps no modes or times: the file still shows its own
    assert (stat.S_IMODE(st2.st_mode), st2.st_mtime_ns, st2.st_size) == \
        (0o644, st.st_mtime_ns, len(before))
    assert read_bytes(path) == before


# --- read-only files and mounts ----------------------------------------------------------

READ_ONLY = [("SALES", "datasets", "orders", "partitions.json"),
             ("SALES", "datasets", "orders", "metrics.json"),
             SCENARIO + ("last-runs.json",)]


@pytest.mark.parametrize("parts", READ_ONLY, ids=lambda p: p[-1])
def test_read_only_files_refuse_writers_with_eacces(mounted, parts):
    emu, m = mounted
    path = m.path(*parts)
    before = read_bytes(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    emu.reset_stats()
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC,
                  os.O_WRONLY | os.O_APPEND):
        assert errno_of(os.open, path, flags) == errno.EACCES, flags
    r = run(["sh", "-c", 'echo "{}" > "$1"', "sh", path])
    assert r.returncode != 0
    assert errno_of(os.truncate, path, 0) == errno.EACCES
    tmp = os.path.join(os.path.dirname(path), ".tmp-ro")
    with open(tmp, "w") as f:
        f.write("{}\n")
    assert errno_of(os.rename, tmp, path) == errno.EACCES
    os.unlink(tmp)
    assert non_gets(emu) == []
    assert read_bytes(path) == before


def test_read_only_mount_is_erofs_and_sends_nothing(emulator, mount_factory):
    m = mount_factory(emulator, options=["ro"])
    before = read_bytes(m.path(*SCHEMA))
    read_bytes(m.path(*PAYLOAD_PY))
    emulator.reset_stats()
    for parts in (SCHEMA, PAYLOAD_PY, VARIABLES):
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
            assert errno_of(os.open, m.path(*parts), flags) == errno.EROFS, (parts, flags)
    for fn, args in ((os.open, (m.path(*PY_RECIPE, ".x.swp"), os.O_WRONLY | os.O_CREAT)),
                     (os.truncate, (m.path(*SCHEMA), 0)),
                     (os.rename, (m.path(*SCHEMA), m.path(*SCHEMA[:-1], "schema.json~"))),
                     (os.unlink, (m.path(*SCHEMA),)),
                     (os.mkdir, (m.path(*PY_RECIPE, "d"),)),
                     (os.chmod, (m.path(*SCHEMA), 0o600))):
        assert errno_of(fn, *args) == errno.EROFS, (fn.__name__, args)
    r = run(["sed", "-i", "s/a/b/", m.path(*PAYLOAD_PY)])
    assert r.returncode != 0
    assert non_gets(emulator) == []
    assert read_bytes(m.path(*SCHEMA)) == before
