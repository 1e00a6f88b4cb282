"""instance/: the instance's own objects (issue 10), through the real mount.

An admin key sees info.json, general-settings.json, variables.json, users/, groups/,
connections/, clusters/, meanings/, plugins/<id>/settings.json and project-folders/ (their
content is checked against the API by test_tree.py with the rest of the tree; the project
folders in test_project_folders.py); any other key sees info.json and project-folders/
only, decided by one probe at mount.  Secrets come as DSS serves them
(encrypted) and a save that leaves them as they were leaves them as they were on DSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from dssfs_harness import READER_KEY, read_bytes

CONN = ("instance", "connections", "dwh_postgres.json")
USER = ("instance", "users", "alice.json")


def secrets(emu) -> dict:
    return emu.control("GET", "secrets")


def puts(emu):
    return [ln.split()[1] for ln in emu.log_lines() if ln.startswith(("PUT ", "POST "))]


def edit_json(path, fn):
    """Reads, changes and writes back a JSON file as an editor would (one write, close)."""
    doc = json.loads(read_bytes(path))
    fn(doc)
    with open(path, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    return doc


def test_an_admin_key_sees_the_instance_objects(emulator, mount_factory):
    m = mount_factory(emulator)
    assert sorted(os.listdir(m.path("instance"))) == [
        "clusters", "code-envs", "connections", "general-settings.json", "groups",
        "info.json", "meanings", "plugins", "project-folders", "users", "variables.json"]
    assert "alice.json" in os.listdir(m.path("instance", "users"))
    assert "settings.json" in os.listdir(m.path("instance", "plugins", "sales-tools"))
    assert os.stat(m.path("instance", "info.json")).st_mode & 0o777 == 0o444
    assert os.stat(m.path(*CONN)).st_mode & 0o777 == 0o644


def test_code_envs_are_shown_by_language_from_one_list_and_saved(emulator, mount_factory):
    """DSS lists every code env in one list (admin/code-envs/, each item with its
    envLang): code-envs/python and code-envs/r show theirs, from one GET of it; a save
    of one env lands on its own endpoint, with exactly what was written."""
    emu = emulator
    m = mount_factory(emu)
    envs = emu.api_get("admin/code-envs/")
    emu.reset_stats()
    for lang, folder in (("PYTHON", "python"), ("R", "r")):
        want = sorted(e["envName"] + ".json" for e in envs if e["envLang"] == lang)
        assert want and sorted(os.listdir(m.path("instance", "code-envs", folder))) == want
    # the list once for both folders (the envs' documents are prefetched meanwhile)
    assert emu.log_lines().count("GET /public/api/admin/code-envs/") == 1
    emu.reset_stats()
    env = ("instance", "code-envs", "python", "py311_sales.json")
    doc = edit_json(m.path(*env), lambda d: d["desc"].__setitem__("owner", "bob"))
    assert puts(emu) == ["/public/api/admin/code-envs/PYTHON/py311_sales"]
    held = emu.api_get("admin/code-envs/PYTHON/py311_sales")
    assert held["desc"]["owner"] == "bob"
    assert json.loads(read_bytes(m.path(*env))) == held
    assert {k: v for k, v in held.items() if k != "desc"} == {
        k: v for k, v in doc.items() if k != "desc"}


def test_a_non_admin_key_sees_info_json_and_project_folders_and_a_clean_backup(
        emulator_factory, mount_factory, tmp_path):
    """One probe at mount decides: a key DSS refuses the admin objects sees instance/
    with info.json and project-folders/ only (not empty admin folders, not files it
    cannot read: test_project_folders.py), the probe's refusal is no error line, and
    `rsync -a` of the whole mount exits 0."""
    emu = emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])
    m = mount_factory(emu, key=READER_KEY)
    assert sorted(os.listdir(m.path("instance"))) == ["info.json", "project-folders"]
    assert json.loads(read_bytes(m.path("instance", "info.json")))["nodeType"]
    r = subprocess.run(["rsync", "-a", m.mnt + "/", str(tmp_path / "copy")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "copy")) == ["SALES", "instance"]
    assert "not an instance admin" in m.stderr_text()


def test_saving_a_connection_keeps_its_secret(emulator, mount_factory):
    """The connection file shows the password as DSS serves it (encrypted); changing its
    port and saving sends that form back, and DSS keeps the real password."""
    emu = emulator
    m = mount_factory(emu)
    before = secrets(emu)
    shown = json.loads(read_bytes(m.path(*CONN)))
    assert shown["params"]["password"].startswith("e:")
    assert before["connections"]["dwh_postgres"]["params.password"] not in read_bytes(
        m.path(*CONN)).decode()
    emu.reset_stats()
    edit_json(m.path(*CONN), lambda d: d["params"].__setitem__("port", 6543))
    assert puts(emu) == ["/public/api/admin/connections/dwh_postgres"]
    assert emu.api_get("admin/connections/dwh_postgres")["params"]["port"] == 6543
    assert secrets(emu) == before
    assert json.loads(read_bytes(m.path(*CONN)))["params"]["port"] == 6543


def test_a_new_cleartext_secret_replaces_the_old_one(emulator, mount_factory):
    """To change a secret, write the new value in clear: DSS stores it (and shows it
    encrypted afterwards); every other secret stays."""
    emu = emulator
    m = mount_factory(emu)
    before = secrets(emu)
    edit_json(m.path(*CONN), lambda d: d["params"].__setitem__("password", "new-pass-7"))
    after = secrets(emu)
    assert after["connections"]["dwh_postgres"]["params.password"] == "new-pass-7"
    after["connections"]["dwh_postgres"]["params.password"] = \
        before["connections"]["dwh_postgres"]["params.password"]
    assert after == before
    assert "new-pass-7" not in read_bytes(m.path(*CONN)).decode()


def test_saving_a_user_keeps_the_users_secrets_and_credentials(emulator, mount_factory):
    emu = emulator
    m = mount_factory(emu)
    before = secrets(emu)
    edit_json(m.path(*USER), lambda d: d.__setitem__("displayName", "Alice M."))
    assert emu.api_get("admin/users/alice")["displayName"] == "Alice M."
    assert secrets(emu) == before


def test_instance_settings_variables_and_plugin_settings_are_saved(emulator, mount_factory):
    """Each with the method DSS takes: PUT for settings and variables, POST for a
    plugin's settings; one request each, and the file shows the saved content."""
    emu = emulator
    m = mount_factory(emu)
    emu.reset_stats()
    edit_json(m.path("instance", "variables.json"), lambda d: d.__setitem__("from_mount", 1))
    edit_json(m.path("instance", "general-settings.json"),
              lambda d: d.__setitem__("dssfsNote", "set from the mount"))
    settings = ("instance", "plugins", "sales-tools", "settings.json")
    edit_json(m.path(*settings), lambda d: d.__setitem__("codeEnvName", "py311_from_mount"))
    methods = [ln.split()[:2] for ln in emu.log_lines() if not ln.startswith("GET ")]
    assert methods == [["PUT", "/public/api/admin/variables/"],
                       ["PUT", "/public/api/admin/general-settings"],
                       ["POST", "/public/api/plugins/sales-tools/settings"]]
    assert emu.api_get("admin/variables/")["from_mount"] == 1
    assert emu.api_get("admin/general-settings")["dssfsNote"] == "set from the mount"
    assert emu.api_get("plugins/sales-tools/settings")["codeEnvName"] == "py311_from_mount"


def backup(m, dest):
    """rsync -a of the mount into dest: the files it transferred."""
    r = subprocess.run(["rsync", "-a", "--out-format=%n", m.mnt + "/", dest],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return sorted(n for n in r.stdout.splitlines() if not n.endswith("/"))


def test_a_second_backup_of_the_instance_copies_nothing(emulator, mount_factory, tmp_path):
    """Within a mount, and after a remount: DSS gives the instance's objects no time, so
    each file keeps the time dssfs first saw its content at (remembered in the times
    file, README "Times"); a file changed on DSS between the mounts is the one copied."""
    emu = emulator
    m = mount_factory(emu)
    dest = str(tmp_path / "backup")
    assert os.path.join(*CONN) in backup(m, dest)
    assert backup(m, dest) == []
    first = os.stat(m.path(*CONN)).st_mtime
    assert m.finish() == []
    time.sleep(1.1)  # (a time that would move, moves by whole seconds)
    m = mount_factory(emu)
    assert backup(m, dest) == []
    assert os.stat(m.path(*CONN)).st_mtime == first
    assert m.finish() == []
    doc = emu.api_get("admin/variables/")
    doc["changed_between_mounts"] = True
    emu.request("PUT", "/public/api/admin/variables/", body=json.dumps(doc).encode(),
                key=emu.admin_key)
    m = mount_factory(emu)
    assert backup(m, dest) == ["instance/variables.json"]
    assert backup(m, dest) == []
    assert json.loads(read_bytes(os.path.join(dest, "instance", "variables.json"))) == doc


def test_times_file_none_gives_the_mount_time(emulator, mount_factory, home):
    m = mount_factory(emulator, options=["times_file=none"])
    before = time.time()
    assert os.stat(m.path(*CONN)).st_mtime >= int(before) - 60
    assert not os.path.exists(os.path.join(str(home), ".cache", "dssfs"))


@pytest.mark.parametrize("name", ["info.json"])
def test_info_json_is_read_only(mounted, name):
    emu, m = mounted
    p = m.path("instance", name)
    with pytest.raises(PermissionError):
        open(p, "w").close()


def test_a_damaged_times_file_is_started_anew(emulator, mount_factory, home):
    """Not ours (another magic) or cut in a record: the mount works, the file is made
    again, and the next mount keeps the times."""
    folder = os.path.join(str(home), ".cache", "dssfs")
    os.makedirs(folder, mode=0o700)
    m = mount_factory(emulator)
    first = os.stat(m.path(*CONN)).st_mtime
    assert m.finish() == []
    (name,) = os.listdir(folder)
    path = os.path.join(folder, name)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, "ab") as f:
        f.write(b"cut")                     # a partial record: ignored
    time.sleep(1.1)
    m = mount_factory(emulator)
    assert os.stat(m.path(*CONN)).st_mtime == first
    assert m.finish() == []
    assert (os.stat(path).st_size - 8) % 24 == 0   # written anew: appends stay aligned
    with open(path, "wb") as f:
        f.write(b"not a times file at all")
    m = mount_factory(emulator)
    assert os.stat(m.path(*CONN)).st_mtime > first
    assert open(path, "rb").read(8) == b"DSSFSTM1"


@pytest.mark.parametrize("folder, endpoint", [
    ("groups", "admin/groups/{}"),
    ("clusters", "admin/clusters/{}"),
    ("meanings", "meanings/{}"),
])
def test_groups_clusters_and_meanings_are_saved(emulator, mount_factory, folder, endpoint):
    """The first object of each folder: a change written through the mount is one PUT on
    its own endpoint, and DSS then holds it."""
    emu = emulator
    m = mount_factory(emu)
    name = sorted(os.listdir(m.path("instance", folder)))[0]
    shown = json.loads(read_bytes(m.path("instance", folder, name)))
    oid = shown.get("id", shown.get("name"))
    emu.reset_stats()
    edit_json(m.path("instance", folder, name),
              lambda d: d.__setitem__("description", "set from the mount"))
    assert puts(emu) == ["/public/api/" + endpoint.format(oid)]
    assert emu.api_get(endpoint.format(oid))["description"] == "set from the mount"
