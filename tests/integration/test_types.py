"""The whole project through the mount (issue 8): every object type of the demo's SALES
project is read and saved with real programs, and each save is checked three ways: what
the mount shows afterwards, what the emulator holds, and the exact requests it received
(method and endpoint).  Also: names (<name>~<id>), the nested wiki, conflicts, read-only
files, object types a DSS lacks, and the real projects' stored objects, object by object.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from dssfs_harness import errno_of, fixtures_dir, read_bytes

P = "projects/SALES/"

# (path under SALES/, endpoint, save method, the field of the endpoint's document the
# file shows (None: all of it; "a.b": nested), kind)
SAVED_FILES = (
    ("tags.json", "tags", "PUT", None, "json"),
    ("wiki/wiki.json", "wiki/", "PUT", None, "json"),
    ("wiki/Home.md", "wiki/Q1w2E3r4", "PUT", "payload", "text"),
    ("wiki/Home.json", "wiki/Q1w2E3r4", "PUT", "article", "json"),
    ("wiki/Home/Data sources.md", "wiki/Zx9Yw8Vu", "PUT", "payload", "text"),
    ("wiki/Home/Sales glossary.json", "wiki/Mn5Bv6Cx", "PUT", "article", "json"),
    ("managed_folders/Reports/settings.json", "managedfolders/Mf4rpt8Z", "PUT", None, "json"),
    ("notebooks/Explore orders (draft).ipynb",
     "jupyter-notebooks/Explore%20orders%20%28draft%29", "PUT", None, "json"),
    ("sql_notebooks/Order checks/settings.json", "sql-notebooks/Sq1nb7X", "PUT", None, "json"),
    ("webapps/Sales board/settings.json", "webapps/Wa1std0", "PUT", None, "json"),
    ("webapps/Sales board/body.html", "webapps/Wa1std0", "PUT", "params.html", "text"),
    ("webapps/Sales board/app.js", "webapps/Wa1std0", "PUT", "params.js", "text"),
    ("webapps/Sales board/style.css", "webapps/Wa1std0", "PUT", "params.css", "text"),
    ("webapps/Sales board/backend.py", "webapps/Wa1std0", "PUT", "params.python", "text"),
    ("webapps/Orders plot/backend.py", "webapps/Wa2bok1", "PUT", "params.python", "text"),
    ("webapps/Customer explorer/ui.R", "webapps/Wa3shn2", "PUT", "params.ui", "text"),
    ("webapps/Customer explorer/server.R", "webapps/Wa3shn2", "PUT", "params.server", "text"),
    ("dashboards/Weekly sales~Db1aK3p.json", "dashboards/Db1aK3p/", "PUT", None, "json"),
    ("insights/Orders per day.json", "insights/In4sgT1/", "POST", None, "json"),
    ("zones/Raw data.json", "flow/zones/Zn1raw0", "PUT", None, "json"),
    ("saved_models/Churn model/settings.json", "savedmodels/Sm8dQ2rT", "PUT", None, "json"),
    ("model_evaluation_stores/Churn evaluations/settings.json", "evaluationstores/mes4ord1",
     "PUT", None, "json"),
    ("analyses/Churn analysis/settings.json", "lab/An7kP2qZ/", "PUT", None, "json"),
    ("analyses/Churn analysis/ml_tasks/Ml3tR8wY/settings.json",
     "models/lab/An7kP2qZ/Ml3tR8wY/settings", "POST", None, "json"),
    ("api_services/orders_api/settings.json", "apiservices/orders_api/settings", "PUT", None,
     "json"),
    ("model_comparisons/Churn models compared.json", "evaluationcomparisons/Mc2cmp9X", "PUT",
     None, "json"),
    ("statistics_worksheets/Order amounts.json", "datasets/orders/statistics/worksheets/Ws5orders1",
     "PUT", None, "json"),
    ("knowledge_banks/Sales docs.json", "knowledge-banks/Kb1docs0", "PUT", None, "json"),
    ("agent_tools/Search sales docs.json", "agents/tools/At1srch0", "PUT", None, "json"),
)

READ_ONLY_FILES = (
    ("code_studios/VS Code for sales.json", "code-studios/Cs1vsc0"),
    ("saved_models/Churn model/versions.json", "savedmodels/Sm8dQ2rT/versions"),
    ("model_evaluation_stores/Churn evaluations/evaluations.json",
     "evaluationstores/mes4ord1/evaluations/"),
    ("sql_notebooks/Order checks/history.json", "sql-notebooks/Sq1nb7X/history"),
)


def field_of(doc, field):
    for k in (field.split(".") if field else ()):
        doc = doc[k]
    return doc


def log_of(emu):
    """(method, path after /public/api/) of each request since the reset."""
    out = []
    for ln in emu.log_lines():
        method, path = ln.split(" ", 1)
        assert path.startswith("/public/api/"), ln
        out.append((method, path[len("/public/api/"):]))
    return out


def edited(kind, data: bytes) -> tuple[bytes, object]:
    """The file's new bytes and the value DSS must then hold for it."""
    if kind == "text":
        text = data.decode() + "\n# edited through dssfs é\n"
        return text.encode(), text
    doc = json.loads(data)
    doc["dssfsNote"] = "edited through dssfs é"
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode(), doc


@pytest.mark.parametrize("rel,ep,method,field,kind", SAVED_FILES,
                         ids=[f[0] for f in SAVED_FILES])
def test_read_and_save_each_type(mounted, rel, ep, method, field, kind):
    emu, m = mounted
    path = m.path("SALES", *rel.split("/"))
    dss = field_of(emu.api_get(P + ep), field)
    data = read_bytes(path)
    assert len(data) == os.stat(path).st_size
    if kind == "text":
        assert data.decode() == (dss or "")
    else:
        assert json.loads(data) == dss
    assert os.stat(path).st_mode & 0o777 == 0o644
    new, want = edited(kind, data)
    emu.reset_stats()
    with open(path, "wb") as f:        # truncate + write + close: one save
        f.write(new)
    # the save re-reads the document (conflict check, and the rest of it for a file
    # that is one field), sends it whole, and reads back what DSS now holds
    assert log_of(emu) == [("GET", P + ep), (method, P + ep), ("GET", P + ep)]
    held = emu.api_get(P + ep)
    if kind == "json":
        got = dict(field_of(held, field))
        want = dict(want)
        for k in ("versionTag",):       # DSS stamps its own
            got.pop(k, None)
            want.pop(k, None)
        assert got == want
    else:
        assert field_of(held, field) == want
    assert read_bytes(path) == (new if kind == "text" else read_bytes(path))
    if kind == "json":
        assert json.loads(read_bytes(path))["dssfsNote"] == "edited through dssfs é"


def colleague_saves(emu, ep, method, field):
    """Another user changes the object on DSS: the part this file shows, through the API
    as the official client saves it."""
    doc = emu.api_get(P + ep)
    part = field_of(doc, field) if field else doc
    if isinstance(part, dict):
        part["dssfsColleague"] = "was here"
    else:   # a text field: change the text itself
        up = field_of(doc, field.rsplit(".", 1)[0]) if "." in field else doc
        up[field.rsplit(".", 1)[-1]] = (part or "") + "\ncolleague\n"
    body = {"insight": doc} if ep.startswith("insights/") else doc
    status, data = emu.request(method, "/public/api/" + P + ep, body=body, key=emu.admin_key)
    assert status == 200, data[:300]


@pytest.mark.expect_dssfs_errors
@pytest.mark.parametrize("rel,ep,method,field,kind", SAVED_FILES,
                         ids=[f[0] for f in SAVED_FILES])
def test_each_type_refuses_a_save_over_a_colleagues_change(mounted, rel, ep, method, field,
                                                           kind):
    """Read, a colleague saves the object on DSS, save: ESTALE, nothing sent, the
    colleague's change kept."""
    emu, m = mounted
    path = m.path("SALES", *rel.split("/"))
    fd = os.open(path, os.O_RDWR)
    try:
        data = os.read(fd, 1 << 24)
        colleague_saves(emu, ep, method, field)
        theirs = emu.api_get(P + ep)
        new, _ = edited(kind, data)
        os.ftruncate(fd, 0)
        os.pwrite(fd, new, 0)
        emu.reset_stats()
        assert errno_of(os.fsync, fd) == errno.ESTALE
    finally:
        assert errno_of(os.close, fd) in (None, errno.ESTALE)
    assert [r for r in log_of(emu) if r[0] != "GET"] == []
    assert emu.api_get(P + ep) == theirs


@pytest.mark.parametrize("rel,ep", READ_ONLY_FILES, ids=[f[0] for f in READ_ONLY_FILES])
def test_read_only_files(mounted, rel, ep):
    emu, m = mounted
    path = m.path("SALES", *rel.split("/"))
    assert json.loads(read_bytes(path)) == emu.api_get(P + ep)
    assert os.stat(path).st_mode & 0o777 == 0o444
    emu.reset_stats()
    assert errno_of(open, path, "r+b") == errno.EACCES
    assert [m_ for m_, _ in log_of(emu) if m_ != "GET"] == []


def test_objects_sharing_a_name_each_show_their_id(mounted):
    emu, m = mounted
    names = sorted(os.listdir(m.path("SALES", "dashboards")))
    assert names == ["Weekly sales~Db1aK3p.json", "Weekly sales~Db2qW7z.json"]
    # renamed on DSS: once the listing is fetched again, each shows its own name
    ep = P + "dashboards/Db2qW7z/"
    doc = emu.api_get(ep)
    doc["name"] = "Monthly sales"
    assert emu.request("PUT", "/public/api/" + ep, body=doc, key=emu.admin_key)[0] == 200
    m.sighup()
    assert sorted(os.listdir(m.path("SALES", "dashboards"))) == [
        "Monthly sales.json", "Weekly sales.json"]
    assert json.loads(read_bytes(m.path("SALES", "dashboards", "Monthly sales.json")))[
        "id"] == "Db2qW7z"


def test_the_wiki_mirrors_the_taxonomy(mounted):
    emu, m = mounted
    w = m.path("SALES", "wiki")
    assert sorted(os.listdir(w)) == ["Home", "Home.json", "Home.md", "wiki.json"]
    assert sorted(os.listdir(os.path.join(w, "Home"))) == [
        "Data sources.json", "Data sources.md", "Sales glossary.json", "Sales glossary.md"]
    art = emu.api_get(P + "wiki/Zx9Yw8Vu")
    assert read_bytes(os.path.join(w, "Home", "Data sources.md")).decode() == art["payload"]
    # a new child under "Sales glossary" on DSS appears as its folder
    wiki = emu.api_get(P + "wiki/")
    wiki["taxonomy"][0]["children"][1]["children"] = [{"id": "Zx9Yw8Vu", "children": []}]
    del wiki["taxonomy"][0]["children"][0]
    assert emu.request("PUT", "/public/api/" + P + "wiki/", body=wiki, key=emu.admin_key)[0] == 200
    m.sighup()
    assert sorted(os.listdir(os.path.join(w, "Home"))) == [
        "Sales glossary", "Sales glossary.json", "Sales glossary.md"]
    assert sorted(os.listdir(os.path.join(w, "Home", "Sales glossary"))) == [
        "Data sources.json", "Data sources.md"]


def test_sed_i_on_a_nested_article_and_vim_on_webapp_code(mounted):
    """Editors' save patterns (temp file + rename; vim's swap and backup files) land in
    the right document, in folders named by objects."""
    emu, m = mounted
    md = m.path("SALES", "wiki", "Home", "Sales glossary.md")
    emu.reset_stats()
    subprocess.run(["sed", "-i", "1s/^/<!-- reviewed -->\\n/", md], check=True, timeout=60)
    assert [r for r in log_of(emu) if r[0] != "GET"] == [("PUT", P + "wiki/Mn5Bv6Cx")]
    assert emu.api_get(P + "wiki/Mn5Bv6Cx")["payload"].startswith("<!-- reviewed -->\n")
    js = m.path("SALES", "webapps", "Sales board", "app.js")
    emu.reset_stats()
    subprocess.run(["vim", "-es", "-u", "NONE", "-c", "$put ='// by vim'", "-c", "wq", js],
                   check=True, timeout=60)
    assert [r for r in log_of(emu) if r[0] != "GET"] == [("PUT", P + "webapps/Wa1std0")]
    held = emu.api_get(P + "webapps/Wa1std0")
    assert held["params"]["js"].endswith("// by vim\n")
    # the rest of the webapp is as it was; settings.json shows the new code at once
    assert json.loads(read_bytes(m.path("SALES", "webapps", "Sales board", "settings.json")))[
        "params"]["js"] == held["params"]["js"]


@pytest.mark.expect_dssfs_errors
def test_a_change_on_dss_since_the_read_is_a_conflict(mounted):
    """Read, a colleague saves the insight on DSS, save: refused (ESTALE), nothing sent."""
    emu, m = mounted
    path = m.path("SALES", "insights", "Orders per day.json")
    ep = P + "insights/In4sgT1/"
    fd = os.open(path, os.O_RDWR)
    try:
        doc = json.loads(os.read(fd, 1 << 20))
        theirs = emu.api_get(ep)
        theirs["listed"] = not theirs.get("listed", False)
        assert emu.request("POST", "/public/api/" + ep, body={"insight": theirs},
                           key=emu.admin_key)[0] == 200
        doc["dssfsNote"] = "mine"
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(doc).encode(), 0)
        emu.reset_stats()
        assert errno_of(os.fsync, fd) == errno.ESTALE
    finally:
        assert errno_of(os.close, fd) in (None, errno.ESTALE)
    assert [r for r in log_of(emu) if r[0] != "GET"] == []
    assert "dssfsNote" not in emu.api_get(ep)


@pytest.mark.expect_dssfs_errors
def test_invalid_json_is_refused_with_no_request(mounted):
    emu, m = mounted
    path = m.path("SALES", "zones", "Reporting.json")
    read_bytes(path)
    emu.reset_stats()
    with pytest.raises(OSError) as e:
        with open(path, "wb") as f:
            f.write(b'{"name": "Reporting",')
    assert e.value.errno == errno.EINVAL
    assert log_of(emu) == []


def test_a_type_this_dss_lacks_has_no_folder(emulator_factory, mount_factory):
    emu = emulator_factory(args=["--missing-route", "agents/tools",
                                 "--missing-route", "knowledge-banks"])
    m = mount_factory(emu)
    names = os.listdir(m.path("SALES"))
    assert "agent_tools" not in names and "knowledge_banks" not in names
    assert "dashboards" in names
    assert errno_of(os.stat, m.path("SALES", "agent_tools")) == errno.ENOENT
    r = subprocess.run(["tar", "cf", "/dev/null", "-C", m.mnt, "."], capture_output=True,
                       timeout=300)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    # asked once per project for the whole walk, and remembered
    lists = [p for meth, p in log_of(emu) if p.endswith("agents/tools")]
    assert sorted(lists) == sorted(set(lists))


# --- the real projects, object by object ---------------------------------------------------

STORED_CODE_EXT = {"python": ("py",), "pyspark": ("py",), "r": ("r", "R"), "sparkr": ("r", "R"),
                   "sql_query": ("sql",), "sql_script": ("sql",), "hive": ("sql",),
                   "impala": ("sql",), "spark_sql_query": ("sql",), "shell": ("sh",)}


def _without(doc, *keys):
    return {k: v for k, v in doc.items() if k not in keys}


def _same_stored(shown, stored, rest_adds):
    """What the mount shows is what DSS stored, less what REST adds (the identity, and the
    version tags an emulator makes up where the stored file has none)."""
    made_up = tuple(k for k in ("versionTag", "creationTag") if k not in stored)
    return _without(shown, *rest_adds, *made_up) == stored


def _by_name(folder: Path, name: str) -> Path:
    return folder / name.replace("%", "%25").replace("/", "%2F")


@pytest.mark.skipif(fixtures_dir() is None,
                    reason="the real DSS projects (../shared/fixtures/dss-projects) are absent")
def test_the_real_projects_show_every_stored_object(emulator_factory, mount_factory):
    fx = fixtures_dir()
    emu = emulator_factory(args=["--fixture", str(fx)])
    m = mount_factory(emu)
    checked = 0
    for proj in sorted(p for p in fx.iterdir() if (p / "params.json").exists()):
        mp = Path(m.path(proj.name))
        load = lambda p: json.loads(p.read_bytes())  # noqa: E731
        params = load(proj / "params.json")
        shown = {f: load(mp / f) for f in ("metadata.json", "settings.json",
                                           "permissions.json")}
        for k, v in params.items():       # every stored key, in exactly one of the three
            homes = [f for f, d in shown.items() if d.get("label" if k == "name" else k) == v
                     and (k != "name" or f == "metadata.json")]
            assert homes, "%s: params.json's %r is not shown" % (proj.name, k)
        checked += 1
        variables = load(mp / "variables.json")
        for f, part in (("variables.json", "standard"), ("localvariables.json", "local")):
            if (proj / f).exists():
                assert variables[part] == load(proj / f)
        if (proj / "tags.json").exists():
            assert load(mp / "tags.json") == load(proj / "tags.json")
            checked += 1
        for f in sorted((proj / "datasets").glob("*.json")):
            assert _same_stored(load(_by_name(mp / "datasets", f.stem) / "settings.json"),
                                load(f), ("projectKey", "name")), f
            checked += 1
        for f in sorted((proj / "recipes").glob("*.json")):
            stored = load(f)
            rd = _by_name(mp / "recipes", f.stem)
            assert _same_stored(load(rd / "recipe.json"), stored, ("projectKey", "name")), f
            t = stored.get("type")
            exts = STORED_CODE_EXT.get(t, (t,))
            payloads = [f.with_suffix("." + e) for e in exts if f.with_suffix("." + e).exists()]
            shown_payload = [p for p in rd.iterdir() if p.name.startswith("payload.")]
            assert len(shown_payload) == 1, rd
            # code and visual payloads byte for byte (a recipe without one: empty)
            assert shown_payload[0].read_bytes() == (payloads[0].read_bytes() if payloads
                                                     else b""), f
            checked += 1
        for f in sorted((proj / "saved_models").glob("*.json")):
            stored = load(f)
            sd = _by_name(mp / "saved_models", stored["name"])
            assert _same_stored(load(sd / "settings.json"), stored, ("projectKey", "id")), f
            checked += 1
        wiki = proj / "wiki"
        if (wiki / "taxonomy.json").exists():
            assert _same_stored(load(mp / "wiki" / "wiki.json"), load(wiki / "taxonomy.json"),
                                ("projectKey",))
            for f in sorted((wiki / "articles").glob("*.json")):
                stored = load(f)
                base = _by_name(mp / "wiki", stored["name"])   # the fixtures' are top level
                assert _same_stored(load(base.with_name(base.name + ".json")), stored,
                                    ("projectKey", "id")), f
                md = f.with_suffix(".md")
                assert base.with_name(base.name + ".md").read_bytes() == (
                    md.read_bytes() if md.exists() else b""), f
                checked += 1
    assert checked > 50


def test_tar_and_a_second_rsync_of_the_whole_demo_are_clean(mounted, tmp_path):
    """The whole demo instance, every type and file tree: tar without a warning; rsync -a
    twice, the second transferring nothing."""
    emu, m = mounted
    r = subprocess.run(["tar", "cf", "-", "-C", m.mnt, "."], capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    names = set(subprocess.run(["tar", "tf", "-"], input=r.stdout, capture_output=True,
                               check=True).stdout.decode().split("\n"))
    for must in ("./SALES/library/python/sales_utils.py", "./SALES/wiki/Home/Data sources.md",
                 "./SALES/managed_folders/Reports/files/readme.txt",
                 "./SALES/statistics_worksheets/Order amounts.json"):
        assert must in names, must
    dest = str(tmp_path / "backup") + "/"
    for run in (1, 2):
        r = subprocess.run(["rsync", "-a", "--stats", m.mnt + "/", dest], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        sent = [ln for ln in r.stdout.splitlines()
                if ln.startswith("Number of regular files transferred")]
        if run == 2:
            assert sent == ["Number of regular files transferred: 0"], r.stdout


def test_names_that_meet_are_listed_once(emulator_factory, mount_factory, tmp_path):
    """Article "x" shows x.json; article "x.json", which has a child, would show a folder
    x.json/ too: the file keeps the name, and it is listed once."""
    proj = tmp_path / "fx" / "NAMES"
    (proj / "wiki" / "articles").mkdir(parents=True)
    (proj / "params.json").write_text('{"name": "Names"}')
    (proj / "wiki" / "taxonomy.json").write_text(json.dumps(
        {"homeArticleId": "a1", "taxonomy": [
            {"id": "a1", "children": []},
            {"id": "a2", "children": [{"id": "a3", "children": []}]}]}))
    for aid, name in (("a1", "x"), ("a2", "x.json"), ("a3", "y")):
        (proj / "wiki" / "articles" / (aid + ".json")).write_text(json.dumps(
            {"name": name, "layout": "WIKI_ARTICLE", "attachments": []}))
        (proj / "wiki" / "articles" / (aid + ".md")).write_text("# %s\n" % name)
    emu = emulator_factory(args=["--fixture", str(tmp_path / "fx")])
    m = mount_factory(emu)
    names = os.listdir(m.path("NAMES", "wiki"))
    assert sorted(names) == ["wiki.json", "x.json", "x.json.json", "x.json.md", "x.md"]
    assert json.loads(read_bytes(m.path("NAMES", "wiki", "x.json")))["id"] == "a1"
    assert read_bytes(m.path("NAMES", "wiki", "x.json.md")) == b"# x.json\n"
