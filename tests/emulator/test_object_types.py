"""Tests of the emulator's object types beyond datasets/recipes/scenarios: every type of a
DSS project folder, the project library and managed-folder files.

Run with: /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/emulator
"""

import base64
import hashlib
import http.client
import io
import json
import os
import shutil
import tempfile
import zipfile

import pytest

from test_emulator import (ADMIN_KEY, READER_KEY, SHARED_FIXTURES, USERS, WRITER_KEY, err,
                           start)

P = "/projects/SALES"


@pytest.fixture(scope="module")
def emu(request):
    return start(request, *USERS)


@pytest.fixture
def fresh(request):
    return start(request, *USERS)


def make_project(root, key, files):
    """A project folder ``root/key`` with ``files`` {relative path: str | bytes | obj}."""
    base = os.path.join(root, key)
    files = dict(files)
    files.setdefault("params.json", {"name": key, "owner": "admin"})
    for rel, content in files.items():
        fp = os.path.join(base, rel)
        os.makedirs(os.path.dirname(fp), exist_ok=True)
        if isinstance(content, (dict, list)):
            content = json.dumps(content)
        if isinstance(content, str):
            content = content.encode("utf-8")
        with open(fp, "wb") as f:
            f.write(content)
    return base


@pytest.fixture
def tmpdir_(request):
    d = tempfile.mkdtemp(prefix="dss-emu-types-")
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


# ---------------------------------------------------------------------------------------
# list / get / save per type
# ---------------------------------------------------------------------------------------

# (list path, listing key or None, id, get path, save method, save path, wraps the body,
#  field to change, tagged)
TYPES = [
    ("dashboards/", None, "Db1aK3p", "dashboards/Db1aK3p/", "PUT", "dashboards/Db1aK3p/",
     None, "name", True),
    ("insights/", None, "In4sgT1", "insights/In4sgT1/", "POST", "insights/In4sgT1/",
     "insight", "name", True),
    ("flow/zones", None, "Zn1raw0", "flow/zones/Zn1raw0", "PUT", "flow/zones/Zn1raw0",
     None, "name", False),
    ("webapps/", None, "Wa2bok1", "webapps/Wa2bok1/", "PUT", "webapps/Wa2bok1", None,
     "name", True),
    ("savedmodels/", None, "Sm8dQ2rT", "savedmodels/Sm8dQ2rT", "PUT", "savedmodels/Sm8dQ2rT",
     None, "name", True),
    ("evaluationstores/", None, "mes4ord1", "evaluationstores/mes4ord1", "PUT",
     "evaluationstores/mes4ord1", None, "name", True),
    ("apiservices/", None, "orders_api", "apiservices/orders_api/settings", "PUT",
     "apiservices/orders_api/settings", None, "authMethod", True),
    ("datasets/orders/statistics/worksheets/", None, "Ws5orders1",
     "datasets/orders/statistics/worksheets/Ws5orders1", "PUT",
     "datasets/orders/statistics/worksheets/Ws5orders1", None, "name", True),
    ("evaluationcomparisons/", None, "Mc2cmp9X", "evaluationcomparisons/Mc2cmp9X", "PUT",
     "evaluationcomparisons/Mc2cmp9X", None, "displayName", True),
    ("knowledge-banks", None, "Kb1docs0", "knowledge-banks/Kb1docs0", "PUT",
     "knowledge-banks/Kb1docs0", None, "name", True),
    ("agents/tools", "tools", "At1srch0", "agents/tools/At1srch0", "PUT",
     "agents/tools/At1srch0", None, "name", True),
    ("managedfolders/", None, "Mf4rpt8Z", "managedfolders/Mf4rpt8Z", "PUT",
     "managedfolders/Mf4rpt8Z", None, "name", True),
    ("sql-notebooks/", None, "Sq1nb7X", "sql-notebooks/Sq1nb7X", "PUT",
     "sql-notebooks/Sq1nb7X", None, "name", True),
    ("lab/", None, "An7kP2qZ", "lab/An7kP2qZ/", "PUT", "lab/An7kP2qZ/", None, "name", True),
    ("lab/An7kP2qZ/models/", "mlTasks", "Ml3tR8wY", "models/lab/An7kP2qZ/Ml3tR8wY/settings",
     "POST", "models/lab/An7kP2qZ/Ml3tR8wY/settings", None, "targetVariable", False),
]


@pytest.mark.parametrize("spec", TYPES, ids=[t[0] for t in TYPES])
def test_list_get_save(fresh, spec):
    lpath, lkey, oid, gpath, method, spath, wrap, field, tagged = spec
    listing = fresh.api("GET", "%s/%s" % (P, lpath), prefix="/dip/publicapi")
    items = listing[lkey] if lkey else listing
    item = [i for i in items if i["id"] == oid]
    assert len(item) == 1 and isinstance(item[0]["name"], str) and item[0]["name"]
    obj = fresh.api("GET", "%s/%s" % (P, gpath))
    obj[field] = "changed value é"
    body = {wrap: obj} if wrap else obj
    # rights, body shape and identity are checked before anything is saved
    err(fresh, method, "%s/%s" % (P, spath), 403, body, key=READER_KEY)
    err(fresh, method, "%s/%s" % (P, spath), 400, "[1, 2]")
    bad = dict(obj, id="other") if "id" in obj else dict(obj, projectKey="OTHER")
    err(fresh, method, "%s/%s" % (P, spath), 400, {wrap: bad} if wrap else bad)
    assert fresh.api("GET", "%s/%s" % (P, gpath))[field] != "changed value é"
    answer = fresh.api(method, "%s/%s" % (P, spath), body, key=WRITER_KEY)
    assert isinstance(answer, dict)
    again = fresh.api("GET", "%s/%s" % (P, gpath), prefix="/dip/publicapi")
    assert again[field] == "changed value é"
    if tagged:
        assert again["versionTag"]["versionNumber"] == obj["versionTag"]["versionNumber"] + 1
        assert again["versionTag"]["lastModifiedBy"] == {"login": "will"}
        assert again["creationTag"] == obj["creationTag"]
    else:
        assert "versionTag" not in again
    assert {k: v for k, v in again.items() if k not in ("versionTag", field)} == \
        {k: v for k, v in obj.items() if k not in ("versionTag", field)}
    err(fresh, "GET", "%s/%s" % (P, gpath.replace(oid, "nope")), 404)


def test_read_only_types_and_tags(emu):
    studios = emu.api("GET", P + "/code-studios/")
    assert [(s["id"], s["name"]) for s in studios] == [("Cs1vsc0", "VS Code for sales")]
    cs = emu.api("GET", P + "/code-studios/Cs1vsc0")
    assert cs["id"] == "Cs1vsc0" and cs["templateId"] == "vscode-template"
    err(emu, "PUT", P + "/code-studios/Cs1vsc0", 405, cs)
    assert emu.api("GET", P + "/tags")["tags"]["sales"] == {"color": "#2f7ed8"}
    assert emu.api("GET", P + "/savedmodels/Sm8dQ2rT/versions") == [
        {"id": "1706600000000", "active": True}]
    assert emu.api("GET", P + "/evaluationstores/mes4ord1/evaluations/") == []
    err(emu, "GET", P + "/evaluationstores/nope/evaluations/", 404)


def test_names_and_listings(emu):
    dashboards = emu.api("GET", P + "/dashboards/")
    assert [(d["id"], d["name"], d["numTiles"]) for d in dashboards] == [
        ("Db1aK3p", "Weekly sales", 1), ("Db2qW7z", "Weekly sales", 2)]
    zones = emu.api("GET", P + "/flow/zones")
    assert [z["id"] for z in zones] == ["default", "Zn1raw0", "Zn2rep9"]
    assert zones[1]["items"][0] == {"objectId": "orders", "objectType": "DATASET"}
    assert list(zones[1]["items"][0]) == ["objectId", "objectType"]
    webapps = emu.api("GET", P + "/webapps/")
    assert [(w["id"], w["type"]) for w in webapps] == [
        ("Wa1std0", "STANDARD"), ("Wa2bok1", "BOKEH"), ("Wa3shn2", "SHINY")]
    nbs = emu.api("GET", P + "/jupyter-notebooks/")
    assert [n["name"] for n in nbs] == ["Explore orders (draft)"]   # no checkpoint
    assert nbs[0]["language"] == "python"
    analyses = emu.api("GET", P + "/lab/")
    assert analyses == [{"id": "An7kP2qZ", "projectKey": "SALES", "name": "Churn analysis",
                         "analysisId": "An7kP2qZ", "inputDataset": "customers",
                         "nbMLTasks": 1}]
    comps = emu.api("GET", P + "/evaluationcomparisons/")
    assert comps[0]["name"] == comps[0]["displayName"] == "Churn models compared"
    assert emu.api("GET", P + "/evaluationcomparisons/?modelTaskTypes=LLM") == []
    # worksheets are addressed under their dataset only
    assert emu.api("GET", P + "/datasets/customers/statistics/worksheets/") == []
    err(emu, "GET", P + "/datasets/customers/statistics/worksheets/Ws5orders1", 404)
    err(emu, "GET", P + "/datasets/nope/statistics/worksheets/", 404)
    for other in ("MARKETING", "HR_ANALYTICS"):
        assert emu.api("GET", "/projects/%s/flow/zones" % other)[0]["id"] == "default"
        assert emu.api("GET", "/projects/%s/libraries/contents" % other) == []


def test_jupyter_and_sql_notebooks(fresh):
    path = P + "/jupyter-notebooks/Explore%20orders%20(draft)"
    nb = fresh.api("GET", path)
    assert nb["cells"][1]["source"][0] == "import dataiku\n"
    nb["cells"][1]["source"] = ["print('hi')\n"]
    fresh.api("PUT", path, nb, key=WRITER_KEY)
    assert fresh.api("GET", path)["cells"][1]["source"] == ["print('hi')\n"]
    err(fresh, "PUT", path, 400, "[]")
    err(fresh, "GET", P + "/jupyter-notebooks/nope", 404)
    # SQL: a cell without code shows the SQL of its latest run
    content = fresh.api("GET", P + "/sql-notebooks/Sq1nb7X")
    assert [c["code"] for c in content["cells"]] == [
        "SELECT day, COUNT(*) FROM orders GROUP BY day;", "SELECT COUNT(*) FROM customers;"]
    hist = fresh.api("GET", P + "/sql-notebooks/Sq1nb7X/history")
    assert [r["id"] for r in hist["c5gH6iJ7kL8"]] == ["q1", "q2"]
    saved = fresh.api("PUT", P + "/sql-notebooks/Sq1nb7X", content)
    assert saved["versionTag"]["versionNumber"] == 3


def test_comparison_aliases_round_trip(fresh):
    c = fresh.api("GET", P + "/evaluationcomparisons/Mc2cmp9X")
    assert c["modelTaskType"] == c["predictionType"] == "BINARY_CLASSIFICATION"
    assert [m["refId"] for m in c["comparedModels"]] == [m["smartId"]
                                                          for m in c["comparedModels"]]
    c["comparedModels"][1]["refId"] = "S-SALES-Sm8dQ2rT-2"
    fresh.api("PUT", P + "/evaluationcomparisons/Mc2cmp9X", c)
    c2 = fresh.api("GET", P + "/evaluationcomparisons/Mc2cmp9X")
    assert c2["comparedModels"][1]["smartId"] == c2["comparedModels"][1]["refId"] == \
        "S-SALES-Sm8dQ2rT-2"
    zf = export(fresh, "SALES")
    stored = json.loads(zf.read("project_config/model_comparisons/Mc2cmp9X.json"))
    assert "refId" not in stored["comparedModels"][1] and "modelTaskType" not in stored


# ---------------------------------------------------------------------------------------
# Export and reload
# ---------------------------------------------------------------------------------------

def export(emu, key):
    status, _, data = emu.request("POST", "/public/api/projects/%s/export" % key)
    assert status == 200
    return zipfile.ZipFile(io.BytesIO(data))


def snapshot(emu, key):
    """Every object of every type, as REST serves it."""
    base = "/projects/%s" % key
    out = {"tags": emu.api("GET", base + "/tags"), "wiki": emu.api("GET", base + "/wiki/"),
           "library": [], "lab": {}}
    for lpath, gfmt, lkey in (("dashboards/", "dashboards/%s/", None),
                              ("insights/", "insights/%s/", None),
                              ("flow/zones", "flow/zones/%s", None),
                              ("webapps/", "webapps/%s", None),
                              ("savedmodels/", "savedmodels/%s", None),
                              ("evaluationstores/", "evaluationstores/%s", None),
                              ("apiservices/", "apiservices/%s/settings", None),
                              ("evaluationcomparisons/", "evaluationcomparisons/%s", None),
                              ("code-studios/", "code-studios/%s", None),
                              ("knowledge-banks", "knowledge-banks/%s", None),
                              ("agents/tools", "agents/tools/%s", "tools"),
                              ("managedfolders/", "managedfolders/%s", None),
                              ("sql-notebooks/", "sql-notebooks/%s", None),
                              ("jupyter-notebooks/", "jupyter-notebooks/%s", None),
                              ("recipes/", "recipes/%s", None)):
        items = emu.api("GET", "%s/%s" % (base, lpath))
        items = items[lkey] if lkey else items
        for i in items:
            oid = i.get("id", i.get("name"))
            out[(lpath, oid)] = emu.api(
                "GET", "%s/%s" % (base, gfmt % urllib_quote(oid)))
    for a in emu.api("GET", base + "/lab/"):
        out["lab"][a["id"]] = emu.api("GET", "%s/lab/%s/" % (base, a["id"]))
        for t in emu.api("GET", "%s/lab/%s/models/" % (base, a["id"]))["mlTasks"]:
            out["lab"][a["id"], t["id"]] = emu.api(
                "GET", "%s/models/lab/%s/%s/settings" % (base, a["id"], t["id"]))
    for ds in emu.api("GET", base + "/datasets/"):
        for w in emu.api("GET", "%s/datasets/%s/statistics/worksheets/" % (
                base, urllib_quote(ds["name"]))):
            out[("ws", w["id"])] = emu.api("GET", "%s/datasets/%s/statistics/worksheets/%s" % (
                base, urllib_quote(ds["name"]), w["id"]))

    def walk(nodes):
        for n in nodes:
            if "children" in n:
                out["library"].append(("dir", n["path"]))
                walk(n["children"])
            else:
                f = emu.api("GET", "%s/libraries/contents/%s?dataEncoding=base64" % (
                    base, urllib_quote(n["path"])))
                out["library"].append((n["path"], f["data"]))
    walk(emu.api("GET", base + "/libraries/contents"))
    return out


def urllib_quote(s):
    import urllib.parse
    return urllib.parse.quote(s, safe="/")


def test_export_round_trips_every_type(fresh, request, tmpdir_):
    # a change of webapp code (merged in params) must come back from the export as a file
    w = fresh.api("GET", P + "/webapps/Wa1std0")
    assert w["params"]["html"].startswith("<h1>Sales board</h1>")
    assert w["params"]["python"].startswith("from flask import jsonify")
    assert w["params"]["backendEnabled"] is True
    w["params"]["html"] = "<p>new body</p>\n"
    fresh.api("PUT", P + "/webapps/Wa1std0", w)
    fresh.request("POST", "/public/api%s/libraries/folders/empty/dir" % P)
    zf = export(fresh, "SALES")
    names = zf.namelist()
    assert zf.read("project_config/web_apps/Wa1std0/body.html") == b"<p>new body</p>\n"
    stored = json.loads(zf.read("project_config/web_apps/Wa1std0.json"))
    assert set(stored["params"]) == {"backendEnabled", "envSelection"}
    assert zf.read("project_config/web_apps/Wa3shn2/ui.R").startswith(b"library(shiny)")
    for n in ("zones/default.json", "notebooks/sql/Sq1nb7X/queries.json",
              "ipython_notebooks/Explore orders (draft).ipynb",
              "analysis/An7kP2qZ/ml/Ml3tR8wY/params.json", "lib/python/__init__.py",
              "lib/empty/dir/", "statistics_worksheets/Ws5orders1.json",
              "lambda_services/orders_api.json", "wiki/articles/Mn5Bv6Cx.md"):
        assert "project_config/" + n in names, n
    ml = json.loads(zf.read("project_config/analysis/An7kP2qZ/ml/Ml3tR8wY/params.json"))
    assert ml["id"] == "Ml3tR8wY" and "projectKey" not in ml and "analysisId" not in ml
    zf.extractall(tmpdir_)
    os.rename(os.path.join(tmpdir_, "project_config"), os.path.join(tmpdir_, "SALES"))
    reloaded = start(request, "--fixture", os.path.join(tmpdir_, "SALES"))
    assert snapshot(reloaded, "SALES") == snapshot(fresh, "SALES")


# ---------------------------------------------------------------------------------------
# Loading rules
# ---------------------------------------------------------------------------------------

def test_recipe_payload_is_chosen_by_type(request, tmpdir_):
    recipe = {"inputs": {}, "outputs": {}}
    make_project(tmpdir_, "PAYLOADS", {
        "recipes/q.json": dict(recipe, type="sql_query"),
        "recipes/q.join": '{"stale": true}',          # a stale visual payload, sorted first
        "recipes/q.sql": "SELECT 1\r\n",
        "recipes/rr.json": dict(recipe, type="r"),
        "recipes/rr.R": "print(1)\n",
        "recipes/sp.json": dict(recipe, type="pyspark"),
        "recipes/sp.py": "# spark\n",
        "recipes/sp.pyc": "junk",
        "recipes/j.json": dict(recipe, type="join"),
        "recipes/j.join": '{"joins": []}',
        "recipes/j.py": "stale\n",
        "recipes/cc.json": dict(recipe, type="CustomCode_split-on-outcome"),
        "recipes/cc.CustomCode_split-on-outcome": "",
        "recipes/sh.json": dict(recipe, type="shell"),
        "recipes/sh.sh": "echo hi\n",
        "recipes/none.json": dict(recipe, type="python"),
        "recipes/none.sql": "SELECT 2\n",                 # not a python payload
        "recipes/orphan.py": "print('no json')\n",
    })
    emu = start(request, "--fixture", tmpdir_)
    base = "/projects/PAYLOADS/recipes/"
    got = {r["name"]: emu.api("GET", base + r["name"])["payload"]
           for r in emu.api("GET", base)}
    assert got == {"q": "SELECT 1\r\n", "rr": "print(1)\n", "sp": "# spark\n",
                   "j": '{"joins": []}', "cc": "", "sh": "echo hi\n", "none": ""}
    names = export(emu, "PAYLOADS").namelist()
    assert "project_config/recipes/q.sql" in names and "project_config/recipes/q.join" \
        not in names and "project_config/recipes/rr.R" in names


def test_loader_layout_rules(request, tmpdir_):
    make_project(tmpdir_, "LAYOUT", {
        "zones/z1.json": {"name": "Only zone", "color": "#000000", "items": [], "shared": []},
        "web_apps/w1.json": {"type": "DASH", "name": "Dash app", "params": {"x": 1}},
        "web_apps/w1/backend.py": "import dash\n",
        "ipython_notebooks/a b.ipynb": {"cells": [], "metadata": {}, "nbformat": 4,
                                        "nbformat_minor": 1},
        "ipython_notebooks/.ipynb_checkpoints/a b-checkpoint.ipynb": {"cells": []},
        "lib/R/x.R": "1\n",
        "lib/data/blob.bin": b"\xff\xfe\x00bin",
        "dashboards/d1.json": {"name": "No tags here"},
    })
    emu = start(request, "--fixture", tmpdir_)
    base = "/projects/LAYOUT"
    zones = emu.api("GET", base + "/flow/zones")
    assert [(z["id"], z["name"]) for z in zones] == [("default", "Default"),
                                                     ("z1", "Only zone")]
    assert emu.api("GET", base + "/webapps/w1")["params"] == {"x": 1, "python": "import dash\n"}
    assert [n["name"] for n in emu.api("GET", base + "/jupyter-notebooks/")] == ["a b"]
    d = emu.api("GET", base + "/dashboards/d1")
    assert d["versionTag"]["versionNumber"] == 1 and d["creationTag"]["versionNumber"] == 0
    assert d == emu.api("GET", base + "/dashboards/d1/")   # made-up tags are stable
    f = emu.api("GET", base + "/libraries/contents/data/blob.bin")
    assert f["data"] == "\ufffd\ufffd\x00bin"   # not UTF-8: decoded with U+FFFD
    f = emu.api("GET", base + "/libraries/contents/data/blob.bin?dataEncoding=base64")
    assert base64.b64decode(f["data"]) == b"\xff\xfe\x00bin"


# ---------------------------------------------------------------------------------------
# Project library
# ---------------------------------------------------------------------------------------

def test_library_tree_and_files(fresh):
    lib = P + "/libraries/"
    tree = fresh.api("GET", lib + "contents")
    assert [n["name"] for n in tree] == ["external-libraries.json", "python"]
    assert "children" not in tree[0] and tree[1]["path"] == "python"
    py = {n["name"]: n for n in tree[1]["children"]}
    assert sorted(py) == ["__init__.py", "helpers", "sales_utils.py"]
    assert [c["path"] for c in py["helpers"]["children"]] == [
        "python/helpers/dates.py", "python/helpers/table.bin"]
    f = fresh.api("GET", lib + "contents//python/__init__.py")
    assert (f["name"], f["path"], f["data"], f["hasData"]) == (
        "__init__.py", "python/__init__.py", "", True)
    f = fresh.api("GET", lib + "contents/python/sales_utils.py")
    assert "\\u20ac" in f["data"] and f["mimeType"] == "text/x-python"
    b = fresh.api("GET", lib + "contents//python/helpers/table.bin?dataEncoding=base64")
    assert base64.b64decode(b["data"]) == bytes(range(256))
    err(fresh, "GET", lib + "contents//python/missing.py", 404)
    # write (creating parents), binary content, read back
    s, _, _ = fresh.request("POST", "/public/api" + lib + "contents//new/sub/m%20y.py",
                            b"x = 1\n", key=WRITER_KEY)
    assert s == 200
    assert fresh.api("GET", lib + "contents/new/sub/m%20y.py")["data"] == "x = 1\n"
    s, _, _ = fresh.request("POST", "/public/api" + lib + "contents/new/b.bin", b"\x00\xff")
    assert base64.b64decode(fresh.api(
        "GET", lib + "contents/new/b.bin?dataEncoding=base64")["data"]) == b"\x00\xff"
    s, _, _ = fresh.request("POST", "/public/api" + lib + "contents/new/empty.py", b"")
    assert fresh.api("GET", lib + "contents/new/empty.py")["data"] == ""
    err(fresh, "POST", lib + "contents/new/sub/m%20y.py/x", 400)    # parent is a file
    err(fresh, "POST", lib + "contents/python", 400)                 # a folder
    err(fresh, "POST", lib + "contents/new/x.py", 403, key=READER_KEY)
    # folders, rename, move, delete
    fresh.api("POST", lib + "folders//made/deep")
    tree = fresh.api("GET", lib + "contents")
    made = [n for n in tree if n["name"] == "made"][0]
    assert made["children"] == [{"name": "deep", "path": "made/deep",
                                 "lastModified": made["children"][0]["lastModified"],
                                 "children": []}]
    fresh.api("POST", lib + "contents-actions/rename/",
              {"oldPath": "/new/sub/m y.py", "newName": "renamed.py"})
    assert fresh.api("GET", lib + "contents/new/sub/renamed.py")["data"] == "x = 1\n"
    err(fresh, "GET", lib + "contents/new/sub/m%20y.py", 404)
    err(fresh, "POST", lib + "contents-actions/rename", 400,
        {"oldPath": "new/sub/renamed.py", "newName": "a/b"})
    err(fresh, "POST", lib + "contents-actions/rename", 404,
        {"oldPath": "new/nope.py", "newName": "c.py"})
    fresh.api("POST", lib + "contents-actions/move", {"oldPath": "new/sub", "newPath": "made"})
    assert fresh.api("GET", lib + "contents/made/sub/renamed.py")["data"] == "x = 1\n"
    err(fresh, "POST", lib + "contents-actions/move", 400,
        {"oldPath": "made", "newPath": "made/deep"})
    err(fresh, "POST", lib + "contents-actions/move", 400,
        {"oldPath": "new/b.bin", "newPath": "new"})                # onto itself
    fresh.api("POST", lib + "contents-actions/move", {"oldPath": "new/b.bin", "newPath": "/"})
    assert fresh.api("GET", lib + "contents/b.bin")["name"] == "b.bin"
    fresh.api("DELETE", lib + "contents//made")
    err(fresh, "GET", lib + "contents/made/sub/renamed.py", 404)
    err(fresh, "DELETE", lib + "contents/made", 404)
    assert "made" not in [n["name"] for n in fresh.api("GET", lib + "contents")]


# ---------------------------------------------------------------------------------------
# Managed folders
# ---------------------------------------------------------------------------------------

MF = P + "/managedfolders/Mf4rpt8Z/contents"


def multipart(data, part_type="{'Expires': '0'}", boundary="b0und4ry"):
    """The body the Python client's put_file sends (empty filename, odd part type)."""
    head = ('--%s\r\nContent-Disposition: form-data; name="file"; filename=""\r\n'
            'Content-Type: %s\r\n\r\n' % (boundary, part_type)).encode()
    return head + data + ("\r\n--%s--\r\n" % boundary).encode(), \
        "multipart/form-data; boundary=%s" % boundary


def test_managed_folder_files(fresh):
    items = fresh.api("GET", MF)["items"]
    assert [i["path"] for i in items] == ["/images/logo.png", "/readme.txt",
                                          "/reports/2024/q1.csv", "/reports/2024/q2 final.csv"]
    s, r, data = fresh.request("GET", "/public/api" + MF + "//images/logo.png")
    assert s == 200 and data.startswith(b"\x89PNG") and \
        int(r.getheader("Content-Length")) == len(data) == items[0]["size"]
    s, r, data = fresh.request("GET", "/public/api" + MF + "/reports/2024/q2%20final.csv")
    assert data == b"month,amount\n2024-04,1100.00\n"
    err(fresh, "GET", MF + "/nope.txt", 404)
    err(fresh, "GET", MF + "/reports", 404)           # a folder is not a file
    # multipart upload (client's odd part headers), binary content
    blob = bytes(range(256)) * 3 + b"\r\n--b0und4r"
    body, ctype = multipart(blob)
    up = fresh.api("POST", MF + "//new%20dir/x.bin", body, headers={"Content-Type": ctype},
                   key=WRITER_KEY)
    assert up["path"] == "/new dir/x.bin" and up["size"] == len(blob)
    assert fresh.request("GET", "/public/api" + MF + "/new%20dir/x.bin")[2] == blob
    # raw body upload, overwrite
    fresh.api("POST", MF + "/readme.txt", "raw text\n")
    assert fresh.request("GET", "/public/api" + MF + "/readme.txt")[2] == b"raw text\n"
    err(fresh, "POST", MF + "/x.txt", 403, "x", key=READER_KEY)
    body, ctype = multipart(b"data")
    err(fresh, "POST", MF + "/readme.txt/under", 400, body, headers={"Content-Type": ctype})
    err(fresh, "POST", MF + "/reports", 400, body, headers={"Content-Type": ctype})
    err(fresh, "POST", MF + "/y.txt", 400, body.replace(b'name="file"', b'name="other"'),
        headers={"Content-Type": ctype})
    # delete: file, missing file (no error), whole sub-folder; empty folders vanish
    fresh.api("DELETE", MF + "/reports/2024/q1.csv")
    fresh.api("DELETE", MF + "/reports/2024/q1.csv")
    fresh.api("DELETE", MF + "/new%20dir/x.bin")
    paths = [i["path"] for i in fresh.api("GET", MF)["items"]]
    assert paths == ["/images/logo.png", "/readme.txt", "/reports/2024/q2 final.csv"]
    fresh.api("DELETE", MF + "/reports")
    assert [i["path"] for i in fresh.api("GET", MF)["items"]] == ["/images/logo.png",
                                                                  "/readme.txt"]
    err(fresh, "GET", P + "/managedfolders/nope/contents", 404)
    # the connection is still in step after all these bodies
    assert fresh.stats()["requests"] > 0


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def test_streamed_200mb_upload_and_download(fresh):
    size = 200 * 1024 * 1024
    block = hashlib.sha256(b"seed").digest() * 2048            # 64 KiB
    boundary = "streamb0undary"
    head = ('--%s\r\nContent-Disposition: form-data; name="file"; filename=""\r\n'
            'Content-Type: application/octet-stream\r\n\r\n' % boundary).encode()
    tail = ("\r\n--%s--\r\n" % boundary).encode()
    want = hashlib.sha256()

    def gen():
        yield head
        for i in range(size // len(block)):
            chunk = block[:-4] + i.to_bytes(4, "big")
            want.update(chunk)
            yield chunk
        yield tail

    rss_before = vm_kib(fresh.proc.pid, "VmRSS")
    conn = http.client.HTTPConnection("127.0.0.1", fresh.port, timeout=120)
    auth = "Basic " + base64.b64encode((ADMIN_KEY + ":").encode()).decode()
    conn.request("POST", "/dip/publicapi" + MF + "//big/file.bin", body=gen(),
                 headers={"Authorization": auth,
                          "Content-Type": "multipart/form-data; boundary=" + boundary,
                          "Content-Length": str(len(head) + size + len(tail))})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    assert json.loads(r.read())["size"] == size
    conn.request("GET", "/dip/publicapi" + MF + "/big/file.bin",
                 headers={"Authorization": auth})
    r = conn.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) == size
    got = hashlib.sha256()
    n = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        got.update(chunk)
        n += len(chunk)
    conn.close()
    assert n == size and got.hexdigest() == want.hexdigest()
    peak = vm_kib(fresh.proc.pid, "VmHWM")
    rss = vm_kib(fresh.proc.pid, "VmRSS")
    # the file is 200 MiB = 204800 KiB; the emulator never held more than a few chunks
    assert rss < rss_before + 20 * 1024 and peak < 100 * 1024, (rss_before, rss, peak)


# ---------------------------------------------------------------------------------------
# Counting, logging, faults on the new routes
# ---------------------------------------------------------------------------------------

def test_new_routes_are_counted_logged_and_faulted(fresh):
    fresh.json("POST", "/__emulator__/reset-stats", key=None)
    fresh.api("GET", P + "/dashboards/")
    fresh.request("GET", "/public/api" + MF + "/readme.txt")
    assert fresh.stats()["requests"] == 2
    assert fresh.log_lines()[-2:] == ["GET /public/api%s/dashboards/" % P,
                                      "GET /public/api%s/readme.txt" % MF]
    # a rule answering 500 on an upload: the body is read, the connection stays usable
    fresh.json("POST", "/__emulator__/faults", {"method": "POST", "path_regex": "/contents/",
                                               "status": 500, "count": 1}, key=None)
    body, ctype = multipart(b"x" * 200000)
    err(fresh, "POST", MF + "/f.bin", 500, body, headers={"Content-Type": ctype})
    fresh.api("POST", MF + "/f.bin", body, headers={"Content-Type": ctype})
    # truncate on a streamed download: full Content-Length, half the bytes
    fresh.json("POST", "/__emulator__/faults", {"path_regex": "/contents/f.bin$",
                                               "fault": "truncate", "count": 1}, key=None)
    conn = fresh.connect()
    auth = "Basic " + base64.b64encode((ADMIN_KEY + ":").encode()).decode()
    conn.request("GET", "/public/api" + MF + "/f.bin", headers={"Authorization": auth})
    r = conn.getresponse()
    assert int(r.getheader("Content-Length")) == 200000
    with pytest.raises(http.client.IncompleteRead) as e:
        r.read()
    assert len(e.value.partial) == 100000
    conn.close()
    fresh.json("POST", "/__emulator__/faults", {"path_regex": "/contents/f.bin$",
                                               "fault": "garbage", "count": 1}, key=None)
    s, r, data = fresh.request("GET", "/public/api" + MF + "/f.bin", conn=fresh.connect())
    assert data == b"x" * 200000 + b"xyz"


# ---------------------------------------------------------------------------------------
# The real projects
# ---------------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(SHARED_FIXTURES),
                    reason="real DSS project folders absent (%s)" % SHARED_FIXTURES)
def test_real_projects_serve_every_stored_object(request):
    emu = start(request, "--fixture", SHARED_FIXTURES)
    checked = 0
    for key in ("HOTELCANCELLATIONMODELMONITORING", "TITANICDATAIKU"):
        root = os.path.join(SHARED_FIXTURES, key)
        base = "/projects/%s" % key

        def stored(*rel):
            with open(os.path.join(root, *rel), encoding="utf-8") as f:
                return json.load(f)

        def text(*rel):
            with open(os.path.join(root, *rel), "rb") as f:
                return f.read().decode("utf-8")

        def same(served, on_disk, *identity):
            rest = {k: v for k, v in served.items() if k not in identity}
            for k in ("versionTag", "creationTag"):
                if k not in on_disk:
                    rest.pop(k, None)
            assert rest == on_disk

        for dirpath, _, filenames in os.walk(root):
            for fn in filenames:
                rel = os.path.relpath(os.path.join(dirpath, fn), root).split(os.sep)
                if rel[0] == "datasets" and fn.endswith(".json"):
                    same(emu.api("GET", "%s/datasets/%s" % (base, fn[:-5])), stored(*rel),
                         "projectKey", "name")
                elif rel[0] == "recipes" and fn.endswith(".json"):
                    r = emu.api("GET", "%s/recipes/%s" % (base, fn[:-5]))
                    same(r["recipe"], stored(*rel), "projectKey", "name")
                    exts = [e for e in os.listdir(os.path.join(root, "recipes"))
                            if e.startswith(fn[:-5] + ".") and e != fn]
                    assert len(exts) <= 1
                    assert r["payload"] == (text("recipes", exts[0]) if exts else "")
                elif rel[0] == "saved_models":
                    same(emu.api("GET", "%s/savedmodels/%s" % (base, fn[:-5])), stored(*rel),
                         "projectKey", "id")
                elif rel[:2] == ["wiki", "articles"] and fn.endswith(".json"):
                    a = emu.api("GET", "%s/wiki/%s" % (base, fn[:-5]))
                    same(a["article"], stored(*rel), "projectKey", "id")
                    assert a["payload"] == text("wiki", "articles", fn[:-5] + ".md")
                elif rel == ["wiki", "taxonomy.json"]:
                    same(emu.api("GET", base + "/wiki/"), stored(*rel), "projectKey")
                elif rel == ["tags.json"]:
                    assert emu.api("GET", base + "/tags") == stored(*rel)
                else:
                    continue
                checked += 1
    assert checked >= 60
