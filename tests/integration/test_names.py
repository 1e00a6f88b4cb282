"""Object names that are not plain file names: listed escaped, readable, contained."""

from __future__ import annotations

import json
import os

import pytest

from dssfs_harness import api_path, escape_name, fnv1a64, read_bytes, project_names

# Names a fixture folder can hold (file names): the escaping of '%' and of long names.
FILE_NAMES = [
    "100%",
    "%2E",                    # a literal "%2E": must not be confused with "."
    "50%2F50",                # a literal "%2F"
    "dots..",
    "-rf",
    "tab\there",
    "trailing space ",
    "\u00e9" * 125,           # 250 bytes of UTF-8 (+ ".json" in the fixture): as is
    "%" * 100,                # 100 bytes, 300 escaped: cut + hash
    "x" * 60 + "%" * 70,      # escaped to 270 bytes: cut between '%25' sequences
    "\U0001F600" * 62,        # 248 bytes of 4-byte characters
]

# Names only the API can create.
API_NAMES = ["a/b", "100%", "n" * 300, "../../../etc", "a/../..", "%2F", "/", "//x",
             "\u00e9" * 150 + "/"]
DOT_NAMES = [".", ".."]

DATASET_ENDPOINTS = {"settings.json": (), "schema.json": ("schema",),
                     "metadata.json": ("metadata",), "partitions.json": ("partitions",),
                     "metrics.json": ("metrics", "last", "NP")}


def _contained(root, path):
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _check_dataset_dirs(emu, m, project, names):
    root = os.path.realpath(m.mnt)
    ddir = m.path(project, "datasets")
    listed = set(os.listdir(ddir))
    want = {escape_name(n): n for n in names}
    assert len(want) == len(names), "test names must escape to distinct file names"
    assert set(want) <= listed, sorted(set(want) - listed)
    for fname, name in want.items():
        assert len(fname.encode()) <= 255 and "/" not in fname
        d = os.path.join(ddir, fname)
        assert _contained(root, d)
        assert sorted(os.listdir(d)) == sorted(["settings.json", "schema.json",
                                                "metadata.json", "partitions.json",
                                                "metrics.json"])
        for fname, tail in DATASET_ENDPOINTS.items():
            p = os.path.join(d, fname)
            data = read_bytes(p)
            assert os.stat(p).st_size == len(data)
            want = emu.api_get(api_path("projects", project, "datasets", name, *tail))
            assert json.loads(data) == want, "%s/%s of dataset %r" % (d, fname, name)
        assert json.loads(read_bytes(os.path.join(d, "settings.json")))["name"] == name
    # nothing outside the mount is reachable through these names
    for dirpath, dnames, fnames in os.walk(m.path(project)):
        for n in dnames + fnames:
            assert _contained(root, os.path.join(dirpath, n))


def test_demo_dataset_with_space_and_accent(mounted):
    emu, m = mounted
    name = "ventes \u00e9 2024"
    assert name in os.listdir(m.path("SALES", "datasets"))
    d = m.path("SALES", "datasets", name)
    assert json.loads(read_bytes(os.path.join(d, "schema.json"))) == emu.api_get(
        api_path("projects", "SALES", "datasets", name, "schema"))
    assert json.loads(read_bytes(os.path.join(d, "settings.json")))["name"] == name


def test_escaped_names_from_a_fixture(tmp_path, emulator_factory, mount_factory):
    proj = tmp_path / "fixture" / "NAMES"
    (proj / "datasets").mkdir(parents=True)
    (proj / "params.json").write_text(json.dumps({"name": "Odd names", "owner": "admin"}))
    for n in FILE_NAMES:
        (proj / "datasets" / (n + ".json")).write_text(json.dumps(
            {"type": "Filesystem", "params": {"path": "/x"},
             "schema": {"columns": [{"name": "c", "type": "string"}]}}))
    emu = emulator_factory(args=["--fixture", str(tmp_path / "fixture")])
    m = mount_factory(emu)
    assert project_names(m.mnt) == ["NAMES"]
    _check_dataset_dirs(emu, m, "NAMES", FILE_NAMES)
    # the hashed spelling is stable and unique
    hashed = [escape_name(n) for n in FILE_NAMES if "%~" in escape_name(n)]
    assert len(hashed) == 2
    assert sorted(os.listdir(m.path("NAMES", "datasets"))) == sorted(
        escape_name(n) for n in FILE_NAMES)
    # the escaped spelling is the only one: the raw name "100%" is not another entry
    assert not os.path.exists(m.path("NAMES", "datasets", "%2E%2E"))
    assert not os.path.exists(m.path("NAMES", "datasets", "100%25x"))


def _create_datasets(emu, names):
    status, body = emu.request(
        "POST", "/public/api/projects/SALES/datasets/",
        body={"projectKey": "SALES", "name": "dssfs_it_probe", "type": "Filesystem",
              "params": {}}, key=emu.admin_key)
    if status in (404, 405):
        pytest.skip("emulator lacks dataset creation")
    assert status == 200, body
    for n in names:
        status, body = emu.request(
            "POST", "/public/api/projects/SALES/datasets/",
            body={"projectKey": "SALES", "name": n, "type": "Filesystem", "params": {},
                  "schema": {"columns": [{"name": "c", "type": "string"}]}},
            key=emu.admin_key)
        assert status == 200, (n, status, body)


def test_names_only_the_api_can_make(emulator, mount_factory):
    _create_datasets(emulator, API_NAMES)
    m = mount_factory(emulator)
    _check_dataset_dirs(emulator, m, "SALES", API_NAMES)
    listed = os.listdir(m.path("SALES", "datasets"))
    assert "a%2Fb" in listed and "100%25" in listed and "%252F" in listed
    assert escape_name("n" * 300) == "n" * 200 + "%~" + "%016x" % fnv1a64(b"n" * 300)


def test_dot_and_dotdot_names(emulator, mount_factory):
    _create_datasets(emulator, DOT_NAMES)
    m = mount_factory(emulator)
    listed = os.listdir(m.path("SALES", "datasets"))
    assert "%2E" in listed and "%2E%2E" in listed
    _check_dataset_dirs(emulator, m, "SALES", DOT_NAMES)
