"""instance/project-folders/: the UI's folder hierarchy of projects (issue 10), through
the real mount against the demo instance (tests/emulator/demo/instance/
project-folders.json):

    instance/project-folders/
      Archive/settings.json
      Business/settings.json
      Business/Sales & Marketing/settings.json
      Business/Sales & Marketing/SALES -> ../../../../SALES
      Business/Sales & Marketing/Campaigns/settings.json
      Business/Sales & Marketing/Campaigns/MARKETING -> ../../../../../MARKETING
      People/settings.json
      People/HR_ANALYTICS -> ../../../HR_ANALYTICS

Each folder is one GET project-folders/<id> (its name, its sub-folders' ids, its projects'
keys; the root's is project-folders/ROOT); settings.json is GET/PUT
project-folders/<id>/settings, for an admin key only.  Links are relative, so that they
resolve in the mount and in a copy of it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess

from dssfs_harness import READER_KEY, api_path, errno_of, escape_name, read_bytes
from test_instance_tree import edit_json
from test_stats import quiet_stats

API = "/public/api/"
PF = ("instance", "project-folders")
SALES_DIR = PF + ("Business", "Sales & Marketing")
IDS = {"Business": "fBusin01", "Business/Sales & Marketing": "fSales02",
       "Business/Sales & Marketing/Campaigns": "fCampa03", "People": "fPeopl04",
       "Archive": "fArchi05"}
LINKS = {"Business/Sales & Marketing/SALES": "../../../../SALES",
         "Business/Sales & Marketing/Campaigns/MARKETING": "../../../../../MARKETING",
         "People/HR_ANALYTICS": "../../../HR_ANALYTICS"}


def requests(emu):
    """(method, path) of the requests since the last reset."""
    return [tuple(ln.split()[:2]) for ln in emu.log_lines()]


def find(path):
    """`find` of a folder: one line per entry, its type (d, f, l) and path."""
    r = subprocess.run(["find", ".", "-printf", "%y %P\n"], cwd=path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return sorted(ln for ln in r.stdout.splitlines() if ln != "d ")


def admin_tree():
    return sorted(["d " + f for f in IDS] + ["f %s/settings.json" % f for f in IDS]
                  + ["l " + link for link in LINKS])


def test_the_hierarchy_each_folder_one_get_and_its_settings(emulator, mount_factory):
    """find shows the folders, their settings.json and the projects' links; a cold walk
    asks for each folder's document and settings once, and for nothing else (a link
    fetches nothing of its project); a warm one asks for nothing."""
    emu = emulator
    m = mount_factory(emu)
    emu.reset_stats()
    assert find(m.path(*PF)) == admin_tree()
    quiet_stats(emu, m)
    want = {("GET", API + "project-folders/ROOT")}
    want |= {("GET", API + "project-folders/" + i) for i in IDS.values()}
    want |= {("GET", API + "project-folders/%s/settings" % i) for i in IDS.values()}
    assert sorted(requests(emu)) == sorted(want)
    emu.reset_stats()
    subprocess.run(["ls", "-lR", m.path(*PF)], check=True, capture_output=True, timeout=60)
    assert find(m.path(*PF)) == admin_tree()
    assert emu.request_count() == 0


def test_ls_lR_and_readlink_show_relative_links(emulator, mount_factory):
    m = mount_factory(emulator)
    r = subprocess.run(["ls", "-lR", m.path(*PF)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    assert " SALES -> ../../../../SALES\n" in r.stdout
    assert " HR_ANALYTICS -> ../../../HR_ANALYTICS\n" in r.stdout
    for rel, target in LINKS.items():
        p = m.path(*PF, rel)
        st = os.lstat(p)
        assert stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777, rel
        assert st.st_size == len(target), rel
        r = subprocess.run(["readlink", p], capture_output=True, text=True, timeout=30)
        assert r.stdout == target + "\n", rel
        # it resolves inside the mount, to the project's folder
        assert os.path.realpath(p) == m.path(os.path.basename(rel))
        assert os.stat(p).st_ino == os.stat(m.path(os.path.basename(rel))).st_ino


def test_a_project_is_read_through_its_link(emulator, mount_factory):
    emu = emulator
    m = mount_factory(emu)
    r = subprocess.run("cat %s/Business/Sales*/SALES/metadata.json"
                       % m.path(*PF).replace(" ", "\\ "), shell=True, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == read_bytes(m.path("SALES", "metadata.json"))
    assert json.loads(r.stdout) == emu.api_get("projects/SALES/metadata")
    assert sorted(os.listdir(m.path(*SALES_DIR, "SALES"))) == sorted(
        os.listdir(m.path("SALES")))


def test_rsync_copies_links_that_resolve_in_the_copy_and_a_second_run_copies_nothing(
        emulator, mount_factory, tmp_path):
    emu = emulator
    m = mount_factory(emu)
    dest = tmp_path / "backup"
    (dest / "instance").mkdir(parents=True)
    for src, to in ((m.path(*PF), dest / "instance"), (m.path("SALES"), dest)):
        r = subprocess.run(["rsync", "-a", src, str(to) + "/"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    link = dest.joinpath(*SALES_DIR, "SALES")
    assert link.is_symlink() and os.readlink(link) == "../../../../SALES"
    # resolved in the copy, to the copied project
    assert link.resolve() == (dest / "SALES").resolve()
    assert (link / "metadata.json").read_bytes() == read_bytes(m.path("SALES", "metadata.json"))
    for rel in LINKS:
        assert os.readlink(dest.joinpath(*PF, rel)) == LINKS[rel]
    for f in IDS:
        got = json.loads(dest.joinpath(*PF, f, "settings.json").read_bytes())
        assert got == emu.api_get(api_path("project-folders", IDS[f], "settings"))
    r = subprocess.run(["rsync", "-a", "--itemize-changes", m.path(*PF),
                        str(dest / "instance") + "/"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", "second rsync run copied:\n" + r.stdout
    r = subprocess.run(["tar", "cf", "/dev/null", "-C", m.mnt, "instance/project-folders"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_settings_json_is_the_api_and_a_save_lands_on_dss(emulator, mount_factory):
    """settings.json reads as GET project-folders/<id>/settings; a save re-reads it
    (is it still what the writer read?), PUTs the whole object and reads it back:
    DSS holds it and the file shows it."""
    emu = emulator
    m = mount_factory(emu, options=["prefetch=0"])
    ep = "project-folders/fSales02/settings"
    path = m.path(*SALES_DIR, "settings.json")
    assert json.loads(read_bytes(path)) == emu.api_get(ep)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    emu.reset_stats()
    perm = {"group": "marketing", "read": True, "writeContents": True, "admin": False}
    doc = edit_json(path, lambda d: d["permissions"].append(perm))
    # (and reads back what DSS now holds, which the file then shows)
    assert requests(emu) == [("GET", API + ep), ("PUT", API + ep), ("GET", API + ep)]
    held = emu.api_get(ep)
    assert held == doc and held["permissions"][-1] == perm
    emu.reset_stats()
    assert json.loads(read_bytes(path)) == held
    # the save dropped the listings above the file (the documents of the folders above
    # it, as for any object); its time reads the top one again, and the document that
    # names Business in it
    assert sorted(requests(emu)) == [("GET", API + "project-folders/ROOT"),
                                     ("GET", API + "project-folders/fBusin01")]


def test_editors_save_a_folders_settings_json(emulator, mount_factory):
    """sed -i (a temp file renamed over it) and vim (its swap file and backup beside
    it): their temporary files are scratch files beside settings.json, though a
    sub-folder or a project could take their names, and each save is one PUT."""
    emu = emulator
    m = mount_factory(emu)
    folder = m.path(*PF, "People")
    path = os.path.join(folder, "settings.json")
    ep = "project-folders/fPeopl04/settings"
    listing = sorted(os.listdir(folder))
    emu.reset_stats()
    subprocess.run(["sed", "-i", 's/"chloe"/"dana"/', path], check=True, timeout=60)
    assert [r for r in requests(emu) if r[0] != "GET"] == [("PUT", API + ep)]
    assert emu.api_get(ep)["owner"] == "dana"
    emu.reset_stats()
    subprocess.run(["vim", "-es", "-u", "NONE", "-c", '%s/"dana"/"emma"/', "-c", "wq", path],
                   check=True, timeout=60)
    assert [r for r in requests(emu) if r[0] != "GET"] == [("PUT", API + ep)]
    assert emu.api_get(ep)["owner"] == "emma"
    assert json.loads(read_bytes(path))["owner"] == "emma"
    assert sorted(os.listdir(folder)) == listing


def test_a_folder_renamed_in_its_settings_shows_its_new_name(emulator, mount_factory):
    """A folder's name is in its own document, which its parent's listing reads: a
    save of its settings.json with a new name shows it at once."""
    emu = emulator
    m = mount_factory(emu)
    edit_json(m.path(*PF, "Archive", "settings.json"),
              lambda d: d.__setitem__("name", "Old/projects"))
    assert emu.api_get("project-folders/fArchi05")["name"] == "Old/projects"
    names = os.listdir(m.path(*PF))
    assert "Archive" not in names
    # ('/' is escaped as in every other name, see README "Names")
    assert [n for n in names if n.startswith("Old")] == [escape_name("Old/projects")]
    assert escape_name("Old/projects") == "Old%2Fprojects"
    # deeper, too: the save drops the listings of every folder above the file (each
    # folder's document, which lists its sub-folders)
    edit_json(m.path(*SALES_DIR, "Campaigns", "settings.json"),
              lambda d: d.__setitem__("name", "Promotions"))
    assert sorted(os.listdir(m.path(*SALES_DIR))) == ["Promotions", "SALES", "settings.json"]
    assert os.readlink(m.path(*SALES_DIR, "Promotions", "MARKETING")) == LINKS[
        "Business/Sales & Marketing/Campaigns/MARKETING"]


def test_a_non_admin_key_sees_its_projects_links_and_no_settings(emulator_factory,
                                                                  mount_factory, tmp_path):
    """Any key reads the hierarchy; DSS lists it the projects it may read; settings.json
    is an admin's (not shown, never asked for); its backup of the mount is clean."""
    emu = emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])
    m = mount_factory(emu, key=READER_KEY)
    emu.reset_stats()
    assert find(m.path(*PF)) == sorted(
        ["d " + f for f in IDS] + ["l Business/Sales & Marketing/SALES"])
    quiet_stats(emu, m)
    want = [("GET", API + "project-folders/ROOT")]
    want += [("GET", API + "project-folders/" + i) for i in IDS.values()]
    assert sorted(requests(emu)) == sorted(want)
    assert errno_of(os.stat, m.path(*SALES_DIR, "settings.json")) == errno.ENOENT
    r = subprocess.run(["rsync", "-a", m.mnt + "/", str(tmp_path / "copy")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    link = tmp_path.joinpath("copy", *SALES_DIR, "SALES")
    assert link.resolve() == (tmp_path / "copy" / "SALES").resolve()


def test_links_are_read_only(emulator, mount_factory, tmp_path):
    """No link is made, removed or renamed through the mount (EPERM, as for every DSS
    object); opening one without following it is ELOOP, as everywhere."""
    emu = emulator
    m = mount_factory(emu)
    link = m.path(*SALES_DIR, "SALES")
    emu.reset_stats()
    assert errno_of(os.symlink, "../../../SALES", m.path(*PF, "People", "SALES")) == errno.EPERM
    assert errno_of(os.unlink, link) == errno.EPERM
    assert errno_of(os.rename, link, m.path(*SALES_DIR, "SALES2")) == errno.EPERM
    assert errno_of(os.open, link, os.O_RDONLY | os.O_NOFOLLOW) == errno.ELOOP
    assert errno_of(os.mkdir, m.path(*PF, "New")) == errno.EPERM
    assert [r for r in requests(emu) if r[0] != "GET"] == []
    assert os.readlink(link) == "../../../../SALES"


def test_a_dss_without_project_folders_has_no_folder(emulator, mount_factory):
    """A DSS that answers "not found" for project-folders/ROOT (a version without them)
    shows no project-folders/ rather than a folder that fails every walk."""
    emu = emulator
    emu.add_fault(path_regex="project-folders/ROOT$", status=404)
    m = mount_factory(emu)
    assert "project-folders" not in os.listdir(m.path("instance"))
    r = subprocess.run(["tar", "cf", "/dev/null", "-C", m.mnt, "instance"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
