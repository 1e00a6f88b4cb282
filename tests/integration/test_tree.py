"""What the mount shows: every directory and file of an instance, against the API.

Runs once per instance (the demo with an admin key and with a key that is no admin and
reads or writes only some projects, a --generate'd one, the real DSS project trees), each
mounted once for the module.  No request counts here (the expectations are computed
with direct API GETs); see test_cache.py for those.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess

import pytest

from conftest import INSTANCE_KEYS
from dssfs_harness import expected_tree, project_names, read_bytes

# Needles for grep -r that must be found somewhere in each instance.
GREP_NEEDLES = {"demo": "amount_eur", "demo-reader": "amount_eur", "generated": "write_with_schema", "real": "projectKey"}


@pytest.fixture(scope="module")
def expected(instance):
    name, emu, _ = instance
    return expected_tree(emu, INSTANCE_KEYS.get(name))


def _ordered(v):
    """JSON value with object key order made significant."""
    if isinstance(v, dict):
        return [("{}", [(k, _ordered(x)) for k, x in v.items()])]
    if isinstance(v, list):
        return [_ordered(x) for x in v]
    return v


def _walk(mnt):
    dirs, files = set(), set()
    for root, dnames, fnames in os.walk(mnt, onerror=lambda e: (_ for _ in ()).throw(e)):
        rel = os.path.relpath(root, mnt)
        rel = "" if rel == "." else rel
        dirs.add(rel)
        for f in fnames:
            files.add(os.path.join(rel, f) if rel else f)
    return dirs, files


def test_tree_has_exactly_the_expected_paths(instance, expected):
    _, _, m = instance
    dirs, files = _walk(m.mnt)
    assert dirs == set(expected.dirs)
    assert files == set(expected.files)


def test_directory_listings_equal_api_lists(instance, expected):
    _, _, m = instance
    bad = []
    for rel, (entries, _) in sorted(expected.dirs.items()):
        got = set(os.listdir(m.path(rel)))
        if got != entries:
            bad.append("%s/: listed %s, API says %s" % (rel, sorted(got), sorted(entries)))
    assert not bad, "\n".join(bad)


def test_links_are_relative_and_resolve_to_their_projects(instance, expected):
    """The project folders' links (instance/project-folders/...): lstat says a link of
    the target's length, readlink the target relative to the link's folder, and it
    resolves inside the mount to the project's folder."""
    _, _, m = instance
    assert expected.links or not project_names(m.mnt)
    for rel, target in sorted(expected.links.items()):
        st = os.lstat(m.path(rel))
        assert stat.S_ISLNK(st.st_mode) and st.st_size == len(target.encode()), rel
        assert os.readlink(m.path(rel)) == target, rel
        assert os.path.realpath(m.path(rel)) == m.path(os.path.basename(rel)), rel


def test_fixed_entries_payload_ext_and_script(instance, expected):
    """Entry names per folder kind: the checks of the table, spelled out."""
    _, _, m = instance
    for rel, (entries, _) in expected.dirs.items():
        parts = rel.split("/") if rel else []
        if len(parts) == 4 and parts[1] == "recipes":
            names = os.listdir(m.path(rel))
            payloads = [n for n in names if n.startswith("payload.")]
            assert len(payloads) == 1 and "recipe.json" in names, (rel, names)
        if len(parts) == 4 and parts[1] == "scenarios":
            names = set(os.listdir(m.path(rel)))
            assert "settings.json" in names and "last-runs.json" not in names
            with open(m.path(rel, "settings.json")) as f:
                custom = json.load(f).get("type") == "custom_python"
            assert ("script.py" in names) == custom, (rel, names)


def test_every_file_content_size_and_rendering(instance, expected):
    _, _, m = instance
    bad = []
    for rel, exp in sorted(expected.files.items()):
        p = m.path(rel)
        data = read_bytes(p)
        st = os.stat(p)
        if st.st_size != len(data):
            bad.append("%s: st_size %d but %d bytes read" % (rel, st.st_size, len(data)))
        if st.st_blocks != (len(data) + 511) // 512:
            bad.append("%s: st_blocks %d for %d bytes" % (rel, st.st_blocks, len(data)))
        if exp.kind in ("text", "bytes"):
            want = exp.value if exp.kind == "bytes" else exp.value.encode("utf-8")
            if data != want:
                bad.append("%s: bytes differ from the API's (%d vs %d bytes)"
                           % (rel, len(data), len(want)))
            continue
        if not data.endswith(b"\n") or data.endswith(b"\n\n"):
            bad.append("%s: JSON file does not end with exactly one newline" % rel)
        try:
            value = json.loads(data)
        except ValueError as e:
            bad.append("%s: not JSON: %s" % (rel, e))
            continue
        if value != exp.value:
            bad.append("%s: JSON differs from GET %s" % (rel, exp.endpoint))
        elif _ordered(value) != _ordered(exp.value):
            bad.append("%s: key order differs from the server's" % rel)
        pretty = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
        if data.decode("utf-8") != pretty:
            bad.append("%s: not pretty-printed with a 2-space indent" % rel)
    assert not bad, "%d problems:\n%s" % (len(bad), "\n".join(bad[:40]))


def test_reading_twice_and_at_offsets_gives_the_same_bytes(instance, expected):
    _, _, m = instance
    for rel in sorted(expected.files):
        p = m.path(rel)
        first = read_bytes(p)
        assert read_bytes(p) == first, rel
        if len(first) > 100:
            fd = os.open(p, os.O_RDONLY)
            try:
                for off in (0, 1, 99, len(first) // 2, len(first) - 1, len(first),
                            len(first) + 10):
                    assert os.pread(fd, 37, off) == first[off:off + 37], (rel, off)
            finally:
                os.close(fd)


def test_mtimes_come_from_version_tags(instance, expected):
    _, _, m = instance
    bad = []
    for rel, (_, ms) in expected.dirs.items():
        if ms is not None and os.stat(m.path(rel)).st_mtime_ns != ms * 1_000_000:
            bad.append("dir %s: mtime %d, expected %d ms"
                       % (rel, os.stat(m.path(rel)).st_mtime_ns // 1_000_000, ms))
    for rel, exp in expected.files.items():
        if exp.mtime_ms is None:
            continue
        got = os.stat(m.path(rel)).st_mtime_ns
        if got != exp.mtime_ms * 1_000_000:
            bad.append("%s: mtime %d ms, expected %d ms" % (rel, got // 1_000_000, exp.mtime_ms))
    assert not bad, "\n".join(bad[:40])


def test_modes(instance, expected):
    _, _, m = instance
    for rel in expected.dirs:
        st = os.stat(m.path(rel))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, rel
    for rel, exp in expected.files.items():
        st = os.stat(m.path(rel))
        want = 0o644 if exp.writable else 0o444
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == want, \
            (rel, oct(st.st_mode))
        assert st.st_nlink == 1 and st.st_uid == os.getuid() and st.st_gid == os.getgid()


def test_ls_lR_sizes_equal_bytes(instance, expected):
    _, _, m = instance
    r = subprocess.run(["ls", "-lR", "--quoting-style=literal", "--time-style=+%s", m.mnt],
                       capture_output=True, timeout=120,
                       env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    sizes, cur = {}, None
    for line in r.stdout.decode("utf-8", "surrogateescape").splitlines():
        if line.endswith(":") and line.startswith(m.mnt):
            cur = os.path.relpath(line[:-1], m.mnt)
            cur = "" if cur == "." else cur
        elif line.startswith("-"):
            f = line.split(None, 6)
            sizes[os.path.join(cur, f[6]) if cur else f[6]] = int(f[4])
    assert set(sizes) == set(expected.files)
    bad = [(rel, size, len(read_bytes(m.path(rel)))) for rel, size in sizes.items()
           if size != len(read_bytes(m.path(rel)))]
    assert not bad


def test_find_counts_every_file(instance, expected):
    _, _, m = instance
    r = subprocess.run("find %s -type f | wc -l" % shlex.quote(m.mnt), shell=True,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == ""
    assert int(r.stdout) == len(expected.files)
    r = subprocess.run("find %s -type d | wc -l" % shlex.quote(m.mnt), shell=True,
                       capture_output=True, text=True, timeout=120)
    assert int(r.stdout) == len(expected.dirs)


def test_grep_r_finds_known_string(instance, expected):
    name, _, m = instance
    needle = GREP_NEEDLES[name]
    r = subprocess.run(["grep", "-rl", "--", needle, m.mnt], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    found = {os.path.relpath(p, m.mnt)
             for p in r.stdout.decode("utf-8", "surrogateescape").splitlines()}
    want = set()
    for rel, exp in expected.files.items():
        text = (exp.value if exp.kind == "text" else
                exp.value.decode("utf-8", "replace") if exp.kind == "bytes" else
                json.dumps(exp.value, ensure_ascii=False))
        if needle in text:
            want.add(rel)
    assert want and found == want


def test_jq_columns_of_every_schema(instance, expected):
    _, _, m = instance
    schemas = [rel for rel in sorted(expected.files) if rel.endswith("/schema.json")]
    assert schemas
    for rel in schemas[:40]:
        r = subprocess.run(["jq", ".columns", m.path(rel)], capture_output=True, timeout=30)
        assert r.returncode == 0, (rel, r.stderr)
        assert json.loads(r.stdout) == expected.files[rel].value.get("columns"), rel


def test_inode_numbers_are_stable_and_unique(instance, expected):
    _, _, m = instance
    paths = [""] + sorted(expected.dirs)[1:] + sorted(expected.files) + sorted(expected.links)
    first = {rel: os.lstat(m.path(rel)).st_ino for rel in paths}
    assert len(set(first.values())) == len(first), "two paths share an inode number"
    assert first[""] == 1
    # readdir's d_ino agrees with stat's st_ino
    for rel in expected.dirs:
        with os.scandir(m.path(rel)) as it:
            for e in it:
                child = os.path.join(rel, e.name) if rel else e.name
                assert e.inode() == first[child], child
    assert {rel: os.lstat(m.path(rel)).st_ino for rel in paths} == first
    m.sighup()
    assert {rel: os.lstat(m.path(rel)).st_ino for rel in paths} == first


def test_rsync_copies_exactly_and_a_second_run_copies_nothing(instance, expected, tmp_path):
    _, _, m = instance
    dest = tmp_path / "backup"
    r = subprocess.run(["rsync", "-a", m.mnt + "/", str(dest) + "/"], capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    for rel in expected.files:
        assert (dest / rel).read_bytes() == read_bytes(m.path(rel)), rel
    r = subprocess.run(["diff", "-r", m.mnt, str(dest)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout[:2000]
    r = subprocess.run(["rsync", "-a", "--itemize-changes", m.mnt + "/", str(dest) + "/"],
                       capture_output=True, timeout=300, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", "second rsync run copied:\n" + r.stdout[:2000]
