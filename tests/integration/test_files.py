"""File trees through the mount (issues 8, 10): the project library (SALES/library/), a
managed folder's files (SALES/managed_folders/Reports/files/) and a dev plugin's files
(instance/plugins/sales-tools/files/) are real files: read, write,
create, unlink, mkdir, rmdir, rename, any bytes.  Each change is checked in the mount, in
the emulator, and in the exact requests it took.  A 1 GiB file goes in and out of a
managed folder with dssfs's peak RSS measured.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import shutil
import subprocess
import urllib.parse

import pytest

from dssfs_harness import dssfs_sanitized, errno_of, read_bytes, vm_hwm_kib
from test_stats import quiet_stats

API = "/public/api/"
LIB = "projects/SALES/libraries/contents"
MF = "projects/SALES/managedfolders/Mf4rpt8Z/contents"
PLUGIN = "plugins/sales-tools/contents"


def log_of(emu):
    out = []
    for ln in emu.log_lines():
        method, path = ln.split(" ", 1)
        out.append((method, path[len(API):]))
    return out


def changes(emu):
    """The requests since the reset that change something (not GETs)."""
    return [r for r in log_of(emu) if r[0] != "GET"]


def lib_bytes(emu, path):
    doc = emu.api_get(LIB + "/" + path + "?dataEncoding=base64")
    return base64.b64decode(doc["data"])


def lib_tree(emu):
    """{path: is_folder} of the library, as DSS lists it."""
    out = {}

    def walk(nodes, up):
        for n in nodes:
            p = up + n["name"]
            out[p] = "children" in n
            if "children" in n:
                walk(n["children"], p + "/")
    walk(emu.api_get(LIB), "")
    return out


def mf_bytes(emu, path):
    status, data = emu.request("GET", API + MF + "/" + urllib.parse.quote(path),
                               key=emu.admin_key)
    assert status == 200, (status, data[:200])
    return data


def mf_items(emu):
    return {i["path"].lstrip("/"): i["size"] for i in emu.api_get(MF)["items"]}


def plugin_bytes(emu, path):
    status, data = emu.request("GET", API + PLUGIN + "/" + path, key=emu.admin_key)
    assert status == 200, (status, data[:200])
    return data


def plugin_tree(emu, pid="sales-tools"):
    """{path: is_folder} of a dev plugin's files, as DSS lists them."""
    out = {}

    def walk(nodes, up):
        for n in nodes:
            out[up + n["name"]] = "children" in n
            if "children" in n:
                walk(n["children"], up + n["name"] + "/")
    walk(emu.api_get("plugins/%s/contents" % pid), "")
    return out


def mount_tree(root):
    out = {}
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        for n in dirs:
            out[os.path.normpath(os.path.join(rel, n))] = True
        for n in files:
            out[os.path.normpath(os.path.join(rel, n))] = False
    return out


# --- the project library -------------------------------------------------------------------

def test_the_library_is_its_files_byte_for_byte(mounted):
    emu, m = mounted
    root = m.path("SALES", "library")
    assert mount_tree(root) == lib_tree(emu)
    for rel, is_dir in lib_tree(emu).items():
        if not is_dir:
            data = read_bytes(os.path.join(root, rel))
            assert data == lib_bytes(emu, rel), rel
            assert os.stat(os.path.join(root, rel)).st_size == len(data)
    assert read_bytes(os.path.join(root, "python", "__init__.py")) == b""
    assert b"\0" in read_bytes(os.path.join(root, "python", "helpers", "table.bin"))


def test_overwriting_a_library_file_posts_its_bytes(mounted):
    emu, m = mounted
    path = m.path("SALES", "library", "python", "sales_utils.py")
    new = read_bytes(path) + b"\ndef usd(a):\n    return '%.2f $' % a\n"
    emu.reset_stats()
    with open(path, "wb") as f:
        f.write(new)
    assert changes(emu) == [("POST", LIB + "/python/sales_utils.py")]
    assert lib_bytes(emu, "python/sales_utils.py") == new
    assert read_bytes(path) == new


def test_new_files_folders_binary_and_removal_in_the_library(mounted):
    emu, m = mounted
    root = m.path("SALES", "library", "python")
    emu.reset_stats()
    os.mkdir(os.path.join(root, "pkg"))
    assert changes(emu) == [("POST", "projects/SALES/libraries/folders/python/pkg")]
    blob = bytes(range(256)) * 40
    emu.reset_stats()
    with open(os.path.join(root, "pkg", "data.bin"), "xb") as f:
        f.write(blob)
    # made at once (empty), then its bytes at close
    assert changes(emu) == [("POST", LIB + "/python/pkg/data.bin")] * 2
    assert lib_bytes(emu, "python/pkg/data.bin") == blob
    assert read_bytes(os.path.join(root, "pkg", "data.bin")) == blob
    emu.reset_stats()
    assert errno_of(os.rmdir, os.path.join(root, "pkg")) == errno.ENOTEMPTY
    assert changes(emu) == []
    os.unlink(os.path.join(root, "pkg", "data.bin"))
    os.rmdir(os.path.join(root, "pkg"))
    assert changes(emu) == [("DELETE", LIB + "/python/pkg/data.bin"),
                            ("DELETE", LIB + "/python/pkg")]
    assert "python/pkg" not in lib_tree(emu)
    assert not os.path.exists(os.path.join(root, "pkg"))


def test_renames_in_the_library(mounted):
    emu, m = mounted
    root = m.path("SALES", "library", "python")
    before = lib_bytes(emu, "python/helpers/dates.py")
    emu.reset_stats()
    os.rename(os.path.join(root, "helpers", "dates.py"), os.path.join(root, "helpers", "d.py"))
    assert changes(emu) == [("POST", "projects/SALES/libraries/contents-actions/rename/")]
    emu.reset_stats()
    # another folder and another name: a move, then a rename
    os.rename(os.path.join(root, "helpers", "d.py"), os.path.join(root, "when.py"))
    assert changes(emu) == [("POST", "projects/SALES/libraries/contents-actions/move"),
                            ("POST", "projects/SALES/libraries/contents-actions/rename/")]
    tree = lib_tree(emu)
    assert "python/when.py" in tree and "python/helpers/dates.py" not in tree
    assert lib_bytes(emu, "python/when.py") == before
    assert read_bytes(os.path.join(root, "when.py")) == before


def test_sed_i_and_vim_save_library_files(mounted):
    emu, m = mounted
    path = m.path("SALES", "library", "python", "sales_utils.py")
    subprocess.run(["sed", "-i", "s/euros/EUR/", path], check=True, timeout=60)
    assert b"EUR" in lib_bytes(emu, "python/sales_utils.py")
    subprocess.run(["vim", "-es", "-u", "NONE", "-c", "$put ='# vim'", "-c", "wq", path],
                   check=True, timeout=60)
    data = lib_bytes(emu, "python/sales_utils.py")
    assert data.endswith(b"# vim\n") and b"EUR" in data
    assert read_bytes(path) == data
    # no editor's file is left in the library
    assert sorted(n for n, d in lib_tree(emu).items() if n.startswith("python/")
                  and n.count("/") == 1) == ["python/__init__.py", "python/helpers",
                                             "python/sales_utils.py"]


@pytest.mark.expect_dssfs_errors
@pytest.mark.parametrize("where", ["library", "plugin"])
def test_a_file_changed_on_dss_since_the_read_is_a_conflict(mounted, where):
    """The project library (in memory, by content) and a dev plugin's files (spooled, by
    the time in DSS's list): a save over someone else's change fails and sends nothing."""
    emu, m = mounted
    if where == "library":
        path = m.path("SALES", "library", "python", "helpers", "dates.py")
        ep, rel, now = LIB, "python/helpers/dates.py", lib_bytes
    else:
        path = m.path("instance", "plugins", "sales-tools", "files", "README.md")
        ep, rel, now = PLUGIN, "README.md", plugin_bytes
    fd = os.open(path, os.O_RDWR)
    try:
        os.read(fd, 1 << 20)
        status, _ = emu.request("POST", API + ep + "/" + rel, body=b"# theirs\n",
                                key=emu.admin_key)
        assert status == 200
        os.pwrite(fd, b"# mine", 0)
        emu.reset_stats()
        assert errno_of(os.fsync, fd) == errno.ESTALE
    finally:
        assert errno_of(os.close, fd) in (None, errno.ESTALE)
    assert changes(emu) == []
    assert now(emu, rel) == b"# theirs\n"


# --- a managed folder's files --------------------------------------------------------------

def test_a_managed_folder_shows_its_files_listed_without_downloading_them(mounted):
    emu, m = mounted
    root = m.path("SALES", "managed_folders", "Reports", "files")
    items = mf_items(emu)
    os.stat(os.path.dirname(root))
    emu.reset_stats()
    tree = mount_tree(root)
    sizes = {rel: os.stat(os.path.join(root, rel)).st_size for rel, d in tree.items() if not d}
    assert sizes == items
    assert log_of(emu) == [("GET", MF)]        # ls -lR: the list, no file
    for rel in items:
        assert read_bytes(os.path.join(root, rel)) == mf_bytes(emu, rel)
    assert any(b"\0" in mf_bytes(emu, rel) or not mf_bytes(emu, rel).isascii()
               for rel in items), "the demo should hold a binary file"


def test_writing_appending_and_removing_managed_folder_files(mounted):
    emu, m = mounted
    root = m.path("SALES", "managed_folders", "Reports", "files")
    emu.reset_stats()
    with open(os.path.join(root, "new.csv"), "xb") as f:
        f.write(b"a,b\n1,2\n")
    assert changes(emu) == [("POST", MF + "/new.csv")] * 2
    assert mf_bytes(emu, "new.csv") == b"a,b\n1,2\n"
    emu.reset_stats()
    with open(os.path.join(root, "new.csv"), "ab") as f:
        f.write(b"3,4\n")
    assert changes(emu) == [("POST", MF + "/new.csv")]
    assert mf_bytes(emu, "new.csv") == b"a,b\n1,2\n3,4\n"
    assert read_bytes(os.path.join(root, "new.csv")) == b"a,b\n1,2\n3,4\n"
    emu.reset_stats()
    os.unlink(os.path.join(root, "new.csv"))
    assert changes(emu) == [("DELETE", MF + "/new.csv")]
    assert "new.csv" not in mf_items(emu)


def test_truncating_a_managed_folder_file_without_opening_it(mounted):
    """truncate(2) saves at once, through a temporary file: one upload each."""
    emu, m = mounted
    path = m.path("SALES", "managed_folders", "Reports", "files", "readme.txt")
    before = mf_bytes(emu, "readme.txt")
    emu.reset_stats()
    os.truncate(path, 5)
    assert changes(emu) == [("POST", MF + "/readme.txt")]
    assert mf_bytes(emu, "readme.txt") == before[:5]
    assert os.stat(path).st_size == 5 and read_bytes(path) == before[:5]
    emu.reset_stats()
    os.truncate(path, 0)
    assert changes(emu) == [("POST", MF + "/readme.txt")]
    assert mf_bytes(emu, "readme.txt") == b""


def test_folders_in_a_managed_folder(mounted, tmp_path):
    """DSS keeps no folders there: mkdir, cp -r into it, rm -r all work, and an empty
    folder made here is the mount's only (never a request)."""
    emu, m = mounted
    root = m.path("SALES", "managed_folders", "Reports", "files")
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"A\n")
    (src / "deep" / "b.bin").write_bytes(os.urandom(5000))
    emu.reset_stats()
    os.mkdir(os.path.join(root, "empty"))
    assert changes(emu) == []
    assert os.listdir(os.path.join(root, "empty")) == []
    subprocess.run(["cp", "-r", str(src), os.path.join(root, "copy")], check=True, timeout=60)
    assert mf_bytes(emu, "copy/deep/b.bin") == (src / "deep" / "b.bin").read_bytes()
    r = subprocess.run(["diff", "-r", str(src), os.path.join(root, "copy")],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout
    emu.reset_stats()
    subprocess.run(["rm", "-r", os.path.join(root, "copy"), os.path.join(root, "empty")],
                   check=True, timeout=60)
    assert sorted(changes(emu)) == [("DELETE", MF + "/copy/a.txt"),
                                    ("DELETE", MF + "/copy/deep/b.bin")]
    assert not any(p.startswith("copy/") for p in mf_items(emu))
    assert sorted(os.listdir(root)) == ["images", "readme.txt", "reports"]


def test_mv_in_a_managed_folder_copies_and_deletes(mounted):
    """DSS cannot rename there: rename(2) says EXDEV, and mv copies and deletes."""
    emu, m = mounted
    root = m.path("SALES", "managed_folders", "Reports", "files")
    before = mf_bytes(emu, "readme.txt")
    assert errno_of(os.rename, os.path.join(root, "readme.txt"),
                    os.path.join(root, "r.txt")) == errno.EXDEV
    subprocess.run(["mv", os.path.join(root, "readme.txt"), os.path.join(root, "r.txt")],
                   check=True, timeout=60)
    items = mf_items(emu)
    assert "readme.txt" not in items and mf_bytes(emu, "r.txt") == before




GIB = int(os.environ.get("DSSFS_BIG_FILE_MIB", "1024")) << 20
SANITIZED = dssfs_sanitized()


def test_a_1gib_file_in_and_out_of_a_managed_folder_in_bounded_memory(mounted, tmp_path):
    """cp of a 1 GiB file into the managed folder and back: the same bytes, one upload
    and one download, and dssfs's peak RSS stays under 64 MiB (the bytes go through
    temporary files).  Sanitizer builds may set DSSFS_BIG_FILE_MIB lower."""
    emu, m = mounted
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(GIB >> 20):
            chunk = block[:8] + i.to_bytes(8, "little") + block[16:]
            f.write(chunk)
            h.update(chunk)
    dst = m.path("SALES", "managed_folders", "Reports", "files", "big.bin")
    emu.reset_stats()
    shutil.copyfile(src, dst)
    assert changes(emu) == [("POST", MF + "/big.bin")] * 2
    assert mf_items(emu)["big.bin"] == GIB
    back = tmp_path / "back.bin"
    shutil.copyfile(dst, back)
    h2 = hashlib.sha256()
    with open(back, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h2.update(chunk)
    assert h2.hexdigest() == h.hexdigest()
    assert [r for r in log_of(emu) if r == ("GET", MF + "/big.bin")] == [("GET", MF + "/big.bin")]
    peak = vm_hwm_kib(m.proc.pid)
    print("\n%d MiB in and out of a managed folder: dssfs peak RSS %.1f MiB"
          % (GIB >> 20, peak / 1024))
    # (a sanitizer's own memory would be measured too)
    if not SANITIZED:
        assert peak < 64 * 1024, "dssfs peak RSS %.1f MiB" % (peak / 1024)


# --- a plugin in development's files (instance/plugins/<id>/files/) ---------------------

def test_a_dev_plugin_shows_its_files_byte_for_byte_and_an_installed_one_none(mounted):
    """files/ exists where DSS's list of plugins says isDev (that list, which plugins/
    needs anyway, decides: no request to try it, by the walk or by the prefetch); each
    file is its raw bytes."""
    emu, m = mounted
    emu.reset_stats()
    assert sorted(os.listdir(m.path("instance", "plugins"))) == ["geoip", "sales-tools"]
    assert os.listdir(m.path("instance", "plugins", "geoip")) == ["settings.json"]
    assert sorted(os.listdir(m.path("instance", "plugins", "sales-tools"))) == [
        "files", "settings.json"]
    quiet_stats(emu, m)
    asked = [r[1] for r in log_of(emu)]
    assert asked.count("plugins/") == 1 and "plugins/geoip/contents" not in asked, asked
    root = m.path("instance", "plugins", "sales-tools", "files")
    assert mount_tree(root) == plugin_tree(emu)
    for rel, is_dir in plugin_tree(emu).items():
        if not is_dir:
            data = read_bytes(os.path.join(root, rel))
            assert data == plugin_bytes(emu, rel), rel
            assert os.stat(os.path.join(root, rel)).st_size == len(data)
    assert errno_of(os.listdir, m.path("instance", "plugins", "geoip", "files")) == \
        errno.ENOENT


def test_plugin_files_are_written_created_moved_and_removed(mounted):
    """Each change is the one call DSS has for it, and the bytes land as written (raw
    bodies, binary included)."""
    emu, m = mounted
    root = m.path("instance", "plugins", "sales-tools", "files")
    lib = os.path.join(root, "python-lib", "salestools")
    new = read_bytes(os.path.join(lib, "cleaning.py")) + b"\ndef trim(s):\n    return s\n"
    emu.reset_stats()
    with open(os.path.join(lib, "cleaning.py"), "wb") as f:
        f.write(new)
    assert changes(emu) == [("POST", PLUGIN + "/python-lib/salestools/cleaning.py")]
    assert plugin_bytes(emu, "python-lib/salestools/cleaning.py") == new
    assert read_bytes(os.path.join(lib, "cleaning.py")) == new

    emu.reset_stats()
    os.mkdir(os.path.join(root, "resource"))
    blob = bytes(range(256)) * 40
    with open(os.path.join(root, "resource", "icon.bin"), "xb") as f:
        f.write(blob)
    assert changes(emu) == [("POST", "plugins/sales-tools/folders/resource"),
                            ("POST", PLUGIN + "/resource/icon.bin"),
                            ("POST", PLUGIN + "/resource/icon.bin")]
    assert plugin_bytes(emu, "resource/icon.bin") == blob

    emu.reset_stats()
    os.rename(os.path.join(root, "resource", "icon.bin"), os.path.join(lib, "logo.bin"))
    assert changes(emu) == [("POST", "plugins/sales-tools/contents-actions/move"),
                            ("POST", "plugins/sales-tools/contents-actions/rename")]
    tree = plugin_tree(emu)
    assert "python-lib/salestools/logo.bin" in tree and "resource/icon.bin" not in tree
    assert read_bytes(os.path.join(lib, "logo.bin")) == blob

    emu.reset_stats()
    os.unlink(os.path.join(lib, "logo.bin"))
    os.rmdir(os.path.join(root, "resource"))
    assert changes(emu) == [("DELETE", PLUGIN + "/python-lib/salestools/logo.bin"),
                            ("DELETE", PLUGIN + "/resource")]
    assert "resource" not in plugin_tree(emu)
    assert not os.path.exists(os.path.join(root, "resource"))


def test_sed_i_and_vim_save_plugin_files(mounted):
    emu, m = mounted
    path = m.path("instance", "plugins", "sales-tools", "files", "custom-recipes",
                  "clean-orders", "recipe.py")
    before = set(plugin_tree(emu))
    subprocess.run(["sed", "-i", "1s/^/# sed\\n/", path], check=True, timeout=60)
    assert plugin_bytes(emu, "custom-recipes/clean-orders/recipe.py").startswith(b"# sed\n")
    subprocess.run(["vim", "-es", "-u", "NONE", "-c", "$put ='# vim'", "-c", "wq", path],
                   check=True, timeout=60)
    data = plugin_bytes(emu, "custom-recipes/clean-orders/recipe.py")
    assert data.startswith(b"# sed\n") and data.endswith(b"# vim\n")
    assert read_bytes(path) == data
    assert set(plugin_tree(emu)) == before     # no editor's file is left
