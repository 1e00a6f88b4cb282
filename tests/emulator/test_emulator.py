"""Tests of the DSS REST API emulator (tests/emulator/dss_emulator.py).

Run with: /usr/bin/python3 -m pytest -q tests/emulator

Each test talks to a real emulator subprocess (port 0 + --port-file) over keep-alive
HTTP/1.1 connections (http.client). Every subprocess is killed by a finalizer.
"""

import base64
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "dss_emulator.py")
DEMO = os.path.join(HERE, "demo")
SHARED_FIXTURES = os.environ.get("DSSFS_FIXTURES") or os.path.join(
    HERE, "..", "..", "..", "shared", "fixtures", "dss-projects")

ADMIN_KEY = "admin-key-0123"
READER_KEY = "reader-key"     # read on SALES only
WRITER_KEY = "writer-key"     # write on SALES, read elsewhere, none on HR_ANALYTICS
PADMIN_KEY = "padmin-key"     # project admin on SALES only

NOT_FOUND = "com.dataiku.dip.server.controllers.NotFoundException"
ILLEGAL_ARG = "java.lang.IllegalArgumentException"
UNAUTHORIZED = "com.dataiku.dip.exceptions.UnauthorizedException"
FORBIDDEN = "com.dataiku.dip.security.model.SecurityException"

USERS = ["--user", READER_KEY + ":rita:SALES=read",
         "--user", WRITER_KEY + ":will:SALES=write,HR_ANALYTICS=none,*=read",
         "--user", PADMIN_KEY + ":paula:SALES=admin"]


# ---------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------

class Emu:
    """A running emulator subprocess and a keep-alive client for it."""

    def __init__(self, *args, keys=(ADMIN_KEY,)):
        self.tmp = tempfile.mkdtemp(prefix="dss-emu-test-")
        self.port_file = os.path.join(self.tmp, "port")
        self.log_path = os.path.join(self.tmp, "requests.log")
        self.stderr = open(os.path.join(self.tmp, "stderr"), "w+b")
        cmd = [sys.executable, EMULATOR, "--port", "0", "--port-file", self.port_file,
               "--log-requests", self.log_path]
        for k in keys:
            cmd += ["--api-key", k]
        self.proc = subprocess.Popen(cmd + list(args), stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)
        deadline = time.monotonic() + 15
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stderr.seek(0)
                raise RuntimeError("emulator did not start: %s" % self.stderr.read().decode())
            time.sleep(0.01)
        with open(self.port_file) as f:
            self.port = int(f.read())
        self.conn = self.connect()

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def close(self):
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        # A killed emulator leaves its managed-folder files behind (README, FolderStore).
        for name in os.listdir(tempfile.gettempdir()):
            if name.startswith("dss-emu-folders-%d-" % self.proc.pid):
                shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def request(self, method, path, body=None, key=ADMIN_KEY, headers=None, conn=None,
                auth=None):
        """(status, headers, body bytes). ``body`` dict/list is sent as JSON text with no
        Content-Type, as the official Python client does."""
        h = dict(headers or {})
        if auth is not None:
            h["Authorization"] = auth
        elif key is not None:
            h["Authorization"] = "Basic " + base64.b64encode((key + ":").encode()).decode()
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        c = conn or self.conn
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, r, r.read()

    def json(self, method, path, body=None, expect=200, **kw):
        status, resp, data = self.request(method, path, body, **kw)
        assert status == expect, (status, data)
        assert resp.getheader("Content-Type").startswith("application/json")
        return json.loads(data)

    def api(self, method, path, body=None, expect=200, prefix="/public/api", **kw):
        return self.json(method, prefix + path, body, expect=expect, **kw)

    def stats(self):
        return self.json("GET", "/__emulator__/stats", key=None)

    def log_lines(self):
        with open(self.log_path, encoding="utf-8") as f:
            return f.read().splitlines()


def start(request, *args, **kw):
    emu = Emu(*args, **kw)
    request.addfinalizer(emu.close)
    return emu


@pytest.fixture(scope="module")
def emu(request):
    """Demo instance, shared by read-only tests."""
    return start(request, *USERS)


@pytest.fixture
def fresh(request):
    """Demo instance of its own, for tests that write or count."""
    return start(request, *USERS)


def typed_err(emu, method, path, expect, error_type, body=None, key=ADMIN_KEY, contains=None):
    """A DSS error answer: its status, errorType and (optionally) message."""
    out = emu.api(method, path, body, expect=expect, key=key)
    assert set(out) >= {"errorType", "message", "detailedMessage"}, out
    assert out["errorType"] == error_type, out
    if contains:
        assert contains in out["message"], out
    return out


def err(emu, method, path, status, body=None, **kw):
    data = emu.api(method, path, body, expect=status, **kw)
    assert set(data) >= {"errorType", "message", "detailedMessage"}, data
    return data


# ---------------------------------------------------------------------------------------
# Transport: prefixes, paths, auth, keep-alive
# ---------------------------------------------------------------------------------------

def test_both_prefixes_slashes_and_headers(emu):
    a = emu.api("GET", "/projects/")
    b = emu.api("GET", "/projects", prefix="/dip/publicapi")
    c = emu.json("GET", "//dip/publicapi//projects//")
    assert a == b == c
    assert [p["projectKey"] for p in a] == ["HR_ANALYTICS", "MARKETING", "SALES"]
    for p in a:
        assert {"projectKey", "name", "owner", "tags", "versionTag", "creationTag"} <= set(p)
    status, resp, _ = emu.request("GET", "/public/api/projects/")
    assert resp.getheader("DSS-Version") == "13.4.0"
    assert resp.getheader("Content-Length")


def test_keep_alive_reuses_one_connection(emu):
    conn = emu.connect()
    emu.request("GET", "/public/api/projects/SALES", conn=conn)
    sock = conn.sock
    for _ in range(20):
        status, _, _ = emu.request("GET", "/public/api/projects/SALES/metadata", conn=conn)
        assert status == 200
    assert conn.sock is sock
    conn.close()


def test_auth_forms(emu):
    path = "/public/api/projects/SALES"
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    for auth in ("Basic " + b64(ADMIN_KEY + ":"), "Basic " + b64(":" + ADMIN_KEY),
                 "Bearer " + ADMIN_KEY):
        assert emu.request("GET", path, auth=auth)[0] == 200, auth
    for auth in (None, "Basic " + b64("wrong:"), "Bearer nope", "Basic !!!"):
        kw = {"auth": auth} if auth else {"key": None}
        status, resp, data = emu.request("GET", path, **kw)
        assert status == 401, auth
        assert json.loads(data)["errorType"] == UNAUTHORIZED


def test_percent_decoding_per_segment(emu):
    ds = emu.api("GET", "/projects/SALES/datasets/ventes%20%C3%A9%202024/")
    assert ds["name"] == "ventes é 2024" and ds["projectKey"] == "SALES"
    md = emu.api("GET", "/projects/SALES/datasets/ventes%20%C3%A9%202024/metadata")
    assert md["label"] == "ventes é 2024"
    e = err(emu, "GET", "/projects/SALES/datasets/a%2Fb/schema", 404)
    assert e["message"] == "dataset does not exist: SALES.a/b"


def test_errors(emu):
    e = err(emu, "GET", "/projects/SALES/datasets/orderz", 404)
    assert e["errorType"] == NOT_FOUND and e["message"] == "dataset does not exist: SALES.orderz"
    assert err(emu, "GET", "/projects/NOPE/datasets/", 404)["errorType"] == NOT_FOUND
    assert err(emu, "GET", "/projects/SALES/recipes/x", 404)["message"] == \
        "recipe does not exist: SALES.x"
    assert err(emu, "GET", "/projects/SALES/scenarios/x", 404)["errorType"] == NOT_FOUND
    assert err(emu, "GET", "/no/such/thing", 404)["errorType"] == NOT_FOUND
    assert err(emu, "DELETE", "/projects/SALES/metadata", 405)
    status, _, _ = emu.request("GET", "/elsewhere/projects/")
    assert status == 404


def test_bad_bodies_are_400(fresh):
    bad = [("/projects/SALES/metadata", "{not json"),
           ("/projects/SALES/metadata", [1, 2]),
           ("/projects/SALES/metadata", ""),
           ("/projects/SALES/variables/", {"standard": {}}),
           ("/projects/SALES/recipes/compute_top_customers", {"payload": "SELECT 1"}),
           ("/projects/SALES/datasets/orders", {"name": "other", "type": "Filesystem"}),
           ("/projects/SALES/datasets/orders", {"projectKey": "MARKETING"}),
           ("/projects/SALES/datasets/orders/schema", {"columns": "a,b"}),
           ("/projects/SALES/scenarios/CHECK_ORDERS/payload", {"script": 3}),
           ("/projects/SALES/scenarios/DAILY_BUILD", {"id": "OTHER"})]
    before = fresh.api("GET", "/projects/SALES")["versionTag"]
    for path, body in bad:
        e = err(fresh, "PUT", path, 400, body)
        assert e["errorType"] == ILLEGAL_ARG, (path, e)
    assert fresh.api("GET", "/projects/SALES")["versionTag"] == before


# ---------------------------------------------------------------------------------------
# Rights
# ---------------------------------------------------------------------------------------

def test_rights_reader(emu):
    keys = [p["projectKey"] for p in emu.api("GET", "/projects/", key=READER_KEY)]
    assert keys == ["SALES"]
    assert emu.api("GET", "/projects/SALES/datasets/", key=READER_KEY)
    e = err(emu, "GET", "/projects/SALES/permissions", 403, key=READER_KEY)
    assert e["errorType"] == FORBIDDEN
    assert e["message"] == "Action forbidden, you do not have admin rights on project SALES"
    err(emu, "PUT", "/projects/SALES/metadata", 403, {"label": "x"}, key=READER_KEY)
    err(emu, "GET", "/projects/MARKETING/datasets/", 403, key=READER_KEY)
    # no rights on a project that does not exist either: 403 before 404
    err(emu, "GET", "/projects/NOPE", 403, key=READER_KEY)


def test_rights_writer_and_project_admin(fresh):
    keys = [p["projectKey"] for p in fresh.api("GET", "/projects/", key=WRITER_KEY)]
    assert keys == ["MARKETING", "SALES"]
    md = fresh.api("GET", "/projects/SALES/metadata", key=WRITER_KEY)
    fresh.api("PUT", "/projects/SALES/metadata", md, key=WRITER_KEY)
    err(fresh, "GET", "/projects/SALES/permissions", 403, key=WRITER_KEY)
    err(fresh, "PUT", "/projects/MARKETING/metadata", 403, md, key=WRITER_KEY)
    err(fresh, "GET", "/projects/HR_ANALYTICS", 403, key=WRITER_KEY)
    perms = fresh.api("GET", "/projects/SALES/permissions", key=PADMIN_KEY)
    assert perms["owner"] == "alice" and isinstance(perms["permissions"], list)
    fresh.api("PUT", "/projects/SALES/permissions", perms, key=PADMIN_KEY)
    err(fresh, "GET", "/projects/MARKETING/permissions", 403, key=PADMIN_KEY)
    assert fresh.api("GET", "/projects/SALES", key=PADMIN_KEY)["versionTag"][
        "lastModifiedBy"]["login"] == "paula"


# ---------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------

def test_project_views(emu):
    s = emu.api("GET", "/projects/SALES")
    assert s["name"] == "Sales analytics" and s["owner"] == "alice"
    md = emu.api("GET", "/projects/SALES/metadata")
    assert md["label"] == "Sales analytics" and md["tags"] == ["sales", "daily"]
    assert "checklists" in md and "custom" in md and "customFields" in md
    st = emu.api("GET", "/projects/SALES/settings")
    assert "settings" in st and "label" not in st and "permissions" not in st
    assert st["versionTag"] == s["versionTag"]
    v = emu.api("GET", "/projects/SALES/variables/")
    assert list(v) == ["standard", "local"] and v["standard"]["revenue_currency"] == "EUR"
    assert emu.api("GET", "/instance-info")["nodeType"] == "DESIGN"


def test_datasets(emu):
    items = emu.api("GET", "/projects/SALES/datasets/?foreign=False")
    names = [d["name"] for d in items]
    assert "orders" in names and "ventes é 2024" in names
    for d in items:
        assert d["projectKey"] == "SALES" and "versionTag" in d and "creationTag" in d
    d = emu.api("GET", "/projects/SALES/datasets/orders")
    assert list(d)[:3] == ["projectKey", "name", "type"]
    schema = emu.api("GET", "/projects/SALES/datasets/orders/schema")
    assert schema == d["schema"] and schema["columns"][0]["name"] == "order_id"
    assert emu.api("GET", "/projects/SALES/datasets/orders/partitions") == ["NP"]
    parts = emu.api("GET", "/projects/SALES/datasets/orders_by_day/partitions")
    assert len(parts) >= 3 and all(len(p) == 10 for p in parts)
    assert parts == emu.api("GET", "/projects/SALES/datasets/orders_by_day/partitions")
    m = emu.api("GET", "/projects/SALES/datasets/orders/metrics/last/NP")
    ids = [x["metric"]["id"] for x in m["metrics"]]
    assert "records:COUNT_RECORDS" in ids
    lv = m["metrics"][0]["lastValues"][0]
    assert lv["partition"] == "NP" and isinstance(lv["value"], str) and lv["time"] > 0
    err(emu, "GET", "/projects/SALES/datasets/orders/metrics/last", 404)


def test_create_dataset_with_any_name(fresh):
    for name in ("a/b", "100%", ".", "..", "é" * 200):
        fresh.api("POST", "/projects/SALES/datasets/", {"projectKey": "SALES", "name": name})
        enc = urllib.parse.quote(name, safe="")
        d = fresh.api("GET", "/projects/SALES/datasets/" + enc)
        assert d["name"] == name and d["versionTag"]["versionNumber"] == 1
        assert fresh.api("GET", "/projects/SALES/datasets/%s/schema" % enc)["columns"] == []
    names = [d["name"] for d in fresh.api("GET", "/projects/SALES/datasets/")]
    assert "a/b" in names and ".." in names
    err(fresh, "POST", "/projects/SALES/datasets/", 400, {"name": "a/b"})
    err(fresh, "POST", "/projects/SALES/datasets/", 400, {"type": "Filesystem"})
    err(fresh, "POST", "/projects/SALES/datasets/", 403, {"name": "z"}, key=READER_KEY)


def test_made_up_tags_are_deterministic(emu, request):
    """headcount.json has no versionTag: the emulator makes one up, the same every run."""
    d = emu.api("GET", "/projects/HR_ANALYTICS/datasets/headcount")
    vt, ct = d["versionTag"], d["creationTag"]
    assert vt["versionNumber"] == 1 and ct["versionNumber"] == 0
    assert 1577836800000 <= ct["lastModifiedOn"] < vt["lastModifiedOn"] < 1735689600000
    other = start(request)
    assert other.api("GET", "/projects/HR_ANALYTICS/datasets/headcount") == d


def test_recipes(emu):
    items = emu.api("GET", "/projects/SALES/recipes/")
    assert {"name", "projectKey", "type", "tags", "versionTag"} <= set(items[0])
    r = emu.api("GET", "/projects/SALES/recipes/compute_orders_enriched")
    assert list(r) == ["recipe", "payload"]
    assert r["recipe"]["type"] == "python" and r["recipe"]["name"] == "compute_orders_enriched"
    with open(os.path.join(DEMO, "SALES/recipes/compute_orders_enriched.py"),
              encoding="utf-8", newline="") as f:
        assert r["payload"] == f.read()
    visual = emu.api("GET", "/projects/SALES/recipes/compute_orders_by_day")
    assert isinstance(json.loads(visual["payload"]), dict)
    assert emu.api("GET", "/projects/SALES/recipes/sync_ventes")["payload"] == ""


def test_scenarios(emu):
    items = {s["id"]: s for s in emu.api("GET", "/projects/SALES/scenarios/")}
    assert items["DAILY_BUILD"]["type"] == "step_based"
    assert items["CHECK_ORDERS"]["type"] == "custom_python"
    s = emu.api("GET", "/projects/SALES/scenarios/CHECK_ORDERS")
    assert s["projectKey"] == "SALES" and s["id"] == "CHECK_ORDERS" and "versionTag" in s
    script = emu.api("GET", "/projects/SALES/scenarios/CHECK_ORDERS/payload")["script"]
    assert script.startswith("from dataiku.scenario import Scenario")
    assert emu.api("GET", "/projects/SALES/scenarios/DAILY_BUILD/payload") == {"script": ""}
    runs = emu.api("GET", "/projects/SALES/scenarios/DAILY_BUILD/get-last-runs")
    assert 1 <= len(runs) <= 10
    assert runs == sorted(runs, key=lambda r: -r["start"])
    assert runs[0]["result"]["outcome"] in ("SUCCESS", "WARNING", "FAILED")
    assert len(emu.api("GET", "/projects/SALES/scenarios/DAILY_BUILD/get-last-runs?limit=2")) \
        == min(2, len(runs))
    err(emu, "GET", "/projects/SALES/scenarios/DAILY_BUILD/get-last-runs?limit=x", 400)


def test_wiki_and_export(emu):
    wiki = emu.api("GET", "/projects/SALES/wiki/")
    home = wiki["homeArticleId"]
    by_id = emu.api("GET", "/projects/SALES/wiki/" + home)
    assert by_id["article"]["id"] == home and by_id["payload"].startswith("# Sales")
    assert emu.api("GET", "/projects/SALES/wiki/Data%20sources")["article"]["name"] == \
        "Data sources"
    s1, r1, zip1 = emu.request("POST", "/public/api/projects/SALES/export", {})
    s2, r2, zip2 = emu.request("POST", "/public/api/projects/SALES/export")
    assert s1 == s2 == 200 and r1.getheader("Content-Type") == "application/zip"
    assert zip1 == zip2
    zf = zipfile.ZipFile(io.BytesIO(zip1))
    names = zf.namelist()
    assert names == sorted(names) and all(n.startswith("project_config/") for n in names)
    assert "project_config/datasets/ventes é 2024.json" in names
    assert "project_config/recipes/compute_top_customers.sql" in names
    assert "project_config/scenarios/CHECK_ORDERS.py" in names
    params = json.loads(zf.read("project_config/params.json"))
    assert params["name"] == "Sales analytics" and params["owner"] == "alice"


# ---------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------

def test_put_bumps_version_tags(fresh):
    path = "/projects/SALES/datasets/orders"
    d0 = fresh.api("GET", path)
    d0["description"] = "edited"
    d0["versionTag"] = {"versionNumber": 1}         # stale tag: ignored (last writer wins)
    assert "msg" in fresh.api("PUT", path, d0)
    d1 = fresh.api("GET", path)
    assert d1["description"] == "edited"
    assert d1["versionTag"]["versionNumber"] == 8
    assert d1["versionTag"]["lastModifiedBy"] == {"login": "admin"}
    assert d1["creationTag"] == d0["creationTag"]
    assert list(d1) == list(d0)                       # key order kept
    # schema and metadata writes bump the dataset, strictly increasing times
    cols = d1["schema"]["columns"] + [{"name": "note", "type": "string"}]
    fresh.api("PUT", path + "/schema", {"columns": cols, "userModified": True})
    d2 = fresh.api("GET", path)
    assert d2["schema"]["columns"][-1]["name"] == "note"
    md = fresh.api("GET", path + "/metadata")
    md["tags"] = ["x"]
    fresh.api("PUT", path + "/metadata", md, key=WRITER_KEY)
    d3 = fresh.api("GET", path)
    assert d3["tags"] == ["x"] and d3["versionTag"]["lastModifiedBy"]["login"] == "will"
    times = [d["versionTag"]["lastModifiedOn"] for d in (d1, d2, d3)]
    assert times[0] < times[1] < times[2]
    assert [d["versionTag"]["versionNumber"] for d in (d1, d2, d3)] == [8, 9, 10]


def test_project_level_writes_bump_project(fresh):
    v0 = fresh.api("GET", "/projects/SALES")["versionTag"]["versionNumber"]
    md = fresh.api("GET", "/projects/SALES/metadata")
    md["label"] = "Sales (renamed)"
    fresh.api("PUT", "/projects/SALES/metadata", md)
    st = fresh.api("GET", "/projects/SALES/settings")
    st["projectStatus"] = "Archived"
    fresh.api("PUT", "/projects/SALES/settings", st)
    fresh.api("PUT", "/projects/SALES/variables/", {"standard": {"a": 1}, "local": {}})
    s = fresh.api("GET", "/projects/SALES")
    assert s["name"] == "Sales (renamed)" and s["projectStatus"] == "Archived"
    assert s["versionTag"]["versionNumber"] == v0 + 3
    assert fresh.api("GET", "/projects/SALES/variables/") == {"standard": {"a": 1}, "local": {}}


def test_recipe_and_scenario_writes(fresh):
    path = "/projects/SALES/recipes/compute_top_customers"
    r = fresh.api("GET", path)
    r["payload"] = "SELECT 1\n"
    fresh.api("PUT", path, r, prefix="/dip/publicapi")
    r2 = fresh.api("GET", path)
    assert r2["payload"] == "SELECT 1\n"
    assert r2["recipe"]["versionTag"]["versionNumber"] == r["recipe"]["versionTag"][
        "versionNumber"] + 1
    spath = "/projects/SALES/scenarios/CHECK_ORDERS"
    s0 = fresh.api("GET", spath)
    fresh.api("PUT", spath + "/payload", {"script": "print('hi')\n"})
    s1 = fresh.api("GET", spath)
    assert fresh.api("GET", spath + "/payload") == {"script": "print('hi')\n"}
    assert s1["versionTag"]["versionNumber"] == s0["versionTag"]["versionNumber"] + 1
    s1["active"] = False
    fresh.api("PUT", spath, s1)
    assert fresh.api("GET", spath)["active"] is False


def test_chunked_and_expect_continue_bodies(fresh):
    path = "/public/api/projects/SALES/variables/"
    body = json.dumps({"standard": {"big": "x" * 5000}, "local": {}}).encode()
    auth = {"Authorization": "Bearer " + ADMIN_KEY}
    conn = fresh.connect()
    conn.request("PUT", path, body=iter([body[:100], body[100:]]), headers=auth,
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 200, r.read()
    r.read()
    conn.close()
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as s:
        s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                   % (path, ADMIN_KEY, len(body))).encode())
        assert s.recv(100).startswith(b"HTTP/1.1 100")
        s.sendall(body)
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    got = fresh.api("GET", "/projects/SALES/variables/")
    assert got["standard"]["big"] == "x" * 5000


# ---------------------------------------------------------------------------------------
# Stats, log, faults, latency
# ---------------------------------------------------------------------------------------

def test_stats_and_request_log(fresh):
    fresh.json("POST", "/__emulator__/reset-stats", key=None)
    assert fresh.stats() == {"requests": 0, "by_method": {}, "max_in_flight": 0,
                             "faults": {}, "paused": False}
    n_lines = len(fresh.log_lines())
    fresh.api("GET", "/projects/SALES/datasets/")
    fresh.api("GET", "/projects/SALES/scenarios/DAILY_BUILD/get-last-runs?limit=3&x=True")
    fresh.request("GET", "/public/api/projects/", key="bad")           # 401s count too
    fresh.api("PUT", "/projects/SALES/variables/", {"standard": {}, "local": {}})
    fresh.stats()
    assert fresh.stats() == {"requests": 4, "by_method": {"GET": 3, "PUT": 1},
                             "max_in_flight": 1, "faults": {}, "paused": False}
    assert fresh.log_lines()[n_lines:] == [
        "GET /public/api/projects/SALES/datasets/",
        "GET /public/api/projects/SALES/scenarios/DAILY_BUILD/get-last-runs?limit=3&x=True",
        "GET /public/api/projects/",
        "PUT /public/api/projects/SALES/variables/"]


def test_faults(fresh):
    ctl = lambda m, body=None: fresh.json(m, "/__emulator__/faults", body, key=None)
    rid = ctl("POST", {"method": "GET", "path_regex": "^/projects/SALES/permissions$",
                       "status": 500, "errorType": "java.lang.IllegalStateException",
                       "message": "boom", "count": 1})["id"]
    assert isinstance(rid, int)
    e = fresh.api("GET", "/projects/SALES/permissions", expect=500)
    assert e["errorType"] == "java.lang.IllegalStateException" and e["message"] == "boom"
    fresh.api("GET", "/projects/SALES/permissions")                  # count exhausted
    fresh.api("PUT", "/projects/SALES/variables/", {"standard": {}, "local": {}})

    ctl("POST", {"path_regex": "/datasets/orders$", "status": 502,
                 "raw_body": "<html><body>Bad gateway</body></html>"})
    status, resp, data = fresh.request("GET", "/public/api/projects/SALES/datasets/orders")
    assert status == 502 and data.startswith(b"<html>")
    assert resp.getheader("Content-Type").startswith("text/html")
    ctl("DELETE")
    assert fresh.request("GET", "/public/api/projects/SALES/datasets/orders")[0] == 200

    ctl("POST", {"path_regex": "ventes é", "drop": True, "count": 1})
    conn = fresh.connect()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        fresh.request("GET", "/public/api/projects/SALES/datasets/ventes%20%C3%A9%202024",
                      conn=conn)
    conn.close()
    fresh.api("GET", "/projects/SALES/datasets/ventes%20%C3%A9%202024")

    ctl("POST", {"path_regex": "^/projects/MARKETING$", "delay_ms": 150})
    t0 = time.monotonic()
    assert fresh.api("GET", "/projects/MARKETING")["projectKey"] == "MARKETING"
    assert time.monotonic() - t0 >= 0.15
    assert len(ctl("GET")) == 1
    ctl("DELETE")
    err(fresh, "POST", "/faults", 400, {"path_regex": "("}, prefix="/__emulator__", key=None)


def test_max_in_flight_counts_concurrent_requests(request):
    emu = start(request, "--latency-ms", "200")
    emu.json("POST", "/__emulator__/reset-stats", key=None)
    threads = [threading.Thread(target=lambda: emu.request("GET", "/public/api/projects/",
                                                           conn=emu.connect()))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emu.stats()["max_in_flight"] == 5


def test_latency_is_per_request_and_concurrent(request):
    emu = start(request, "--latency-ms", "100")
    t0 = time.monotonic()
    emu.api("GET", "/projects/SALES")
    assert time.monotonic() - t0 >= 0.1
    t0 = time.monotonic()
    threads = [threading.Thread(target=lambda: emu.api("GET", "/projects/SALES",
                                                       conn=emu.connect()))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 < 0.35                  # 6 x 100 ms, concurrently
    t0 = time.monotonic()
    emu.json("GET", "/__emulator__/stats", key=None)     # control endpoints: no latency
    assert time.monotonic() - t0 < 0.09


# ---------------------------------------------------------------------------------------
# Fault kinds, fault rates, pause / resume, hostile data
# ---------------------------------------------------------------------------------------

SCHEMA_PATH = "/public/api/projects/SALES/datasets/orders/schema"


def rates(emu, **spec):
    """POST /__emulator__/fault-rates (kind keys such as "500" go in ``spec`` as _500)."""
    body = {k.lstrip("_"): v for k, v in spec.items()}
    return emu.json("POST", "/__emulator__/fault-rates", body, key=None)


def raw_get(port, path, key=ADMIN_KEY, timeout=10):
    """Sends one GET on a new socket; reads until the server closes or a complete
    response (by Content-Length) has arrived.  (head bytes, body bytes, error)."""
    token = base64.b64encode((key + ":").encode()).decode()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data, error = b"", None
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n\r\n"
                   % (path, token)).encode())
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = [int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                          if ln.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
            try:
                chunk = s.recv(65536)
            except OSError as e:
                error = e
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, error


def header(head, name):
    for ln in head.split(b"\r\n")[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == name.lower().encode():
            return v.strip().decode()
    return None


def test_fault_rate_500_and_503_with_retry_after(fresh):
    rates(fresh, _500=1.0)
    e = fresh.api("GET", "/projects/SALES/datasets/orders/schema", expect=500)
    assert e["errorType"] == "com.dataiku.dip.exceptions.CodedException"
    assert "Injected fault" in e["message"]
    rates(fresh, _503=1.0)
    status, resp, _ = fresh.request("GET", SCHEMA_PATH)
    assert status == 503 and resp.getheader("Retry-After") == "1"
    rates(fresh, _503=1.0, retry_after=7)
    status, resp, _ = fresh.request("GET", SCHEMA_PATH)
    assert status == 503 and resp.getheader("Retry-After") == "7"
    # control requests never get faults; the connection stayed usable (keep-alive)
    assert fresh.stats()["faults"] == {"500": 1, "503": 2}
    fresh.json("DELETE", "/__emulator__/fault-rates", key=None)
    assert fresh.api("GET", "/projects/SALES/datasets/orders/schema")["columns"]


def test_fault_reset_sends_rst(fresh):
    rates(fresh, reset=1.0)
    head, body, error = raw_get(fresh.port, SCHEMA_PATH)
    assert isinstance(error, ConnectionResetError) and head == b"" and body == b""
    assert fresh.stats()["faults"] == {"reset": 1}
    assert fresh.log_lines()[-1] == "GET " + SCHEMA_PATH


def test_fault_stall_holds_then_closes_without_answer(fresh):
    rates(fresh, stall=1.0, stall_s=0.5)
    t0 = time.monotonic()
    head, body, error = raw_get(fresh.port, SCHEMA_PATH)
    took = time.monotonic() - t0
    assert (head, body, error) == (b"", b"", None)       # a clean close, no answer
    assert 0.5 <= took < 5
    assert fresh.stats()["faults"] == {"stall": 1}


def test_fault_truncate_announces_more_than_it_sends(fresh):
    full = fresh.request("GET", SCHEMA_PATH)[2]
    rates(fresh, truncate=1.0)
    head, body, error = raw_get(fresh.port, SCHEMA_PATH)
    assert error is None and head.startswith(b"HTTP/1.1 200")
    assert int(header(head, "Content-Length")) == len(full)
    assert body == full[:len(full) // 2] and 0 < len(body) < len(full)


def test_fault_badjson_is_a_200_with_a_cut_body(fresh):
    full = fresh.request("GET", SCHEMA_PATH)[2]
    rates(fresh, badjson=1.0)
    status, resp, body = fresh.request("GET", SCHEMA_PATH)
    assert status == 200 and int(resp.getheader("Content-Length")) == len(body)
    assert full.startswith(body) and len(body) < len(full)
    with pytest.raises(ValueError):
        json.loads(body)
    # also for a listing (an array)
    status, _, body = fresh.request("GET", "/public/api/projects/")
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)


def test_fault_drip_sends_the_real_body_slowly(fresh):
    full = fresh.request("GET", SCHEMA_PATH)[2]
    rates(fresh, drip=1.0, drip_bytes=64, drip_interval_ms=20)
    t0 = time.monotonic()
    status, resp, body = fresh.request("GET", SCHEMA_PATH)
    took = time.monotonic() - t0
    assert status == 200 and body == full
    assert took >= 0.02 * (len(full) // 64)             # one pause per 64 bytes
    assert fresh.stats()["faults"] == {"drip": 1}


def test_fault_garbage_appends_after_valid_json(fresh):
    full = fresh.request("GET", SCHEMA_PATH)[2]
    rates(fresh, garbage=1.0)
    status, resp, body = fresh.request("GET", SCHEMA_PATH)
    assert status == 200 and body == full + b"xyz"
    assert int(resp.getheader("Content-Length")) == len(body)
    # as a rule, with its own text, on one path only
    fresh.json("DELETE", "/__emulator__/fault-rates", key=None)
    fresh.json("POST", "/__emulator__/faults",
               {"path_regex": "/orders/schema$", "fault": "garbage", "garbage_text": "}!"},
               key=None)
    assert fresh.request("GET", SCHEMA_PATH)[2] == full + b"}!"
    assert fresh.api("GET", "/projects/SALES/datasets/orders/metadata")
    assert fresh.stats()["faults"] == {"garbage": 2}


def test_fault_rule_kinds(fresh):
    ctl = lambda body: fresh.json("POST", "/__emulator__/faults", body, key=None)  # noqa
    ctl({"path_regex": "/orders/schema$", "fault": 503, "retry_after": 3, "count": 1})
    ctl({"path_regex": "/orders/schema$", "fault": "reset", "count": 1})
    status, resp, _ = fresh.request("GET", SCHEMA_PATH, conn=fresh.connect())
    assert status == 503 and resp.getheader("Retry-After") == "3"
    assert isinstance(raw_get(fresh.port, SCHEMA_PATH)[2], ConnectionResetError)
    assert fresh.request("GET", SCHEMA_PATH, conn=fresh.connect())[0] == 200
    for bad in ({"fault": "nope"}, {"fault": "stall", "stall_s": -1},
                {"fault": "drip", "drip_bytes": 0}, {"fault": "garbage", "garbage_text": 3}):
        err(fresh, "POST", "/faults", 400, bad, prefix="/__emulator__", key=None)


def test_fault_rates_scope_seed_and_validation(request):
    """Rates apply to API requests only, filtered by method and path prefix; the same
    seed gives the same faults; wrong configurations are refused."""
    def statuses(emu, n=40):
        return [emu.request("GET", SCHEMA_PATH)[0] for _ in range(n)]

    a = start(request, "--fault-rate", "500=0.3", "--seed", "5")
    b = start(request, "--fault-rate", "500=0.3", "--seed", "5")
    sa = statuses(a)
    assert sa == statuses(b) and 0 < sa.count(500) < 40
    assert a.stats()["faults"] == {"500": sa.count(500)}
    assert a.stats()["requests"] == 40                   # faults are counted requests
    assert rates(a, _500=0.3, seed=5)["seed"] == 5       # reseeded: the same sequence
    assert statuses(a) == sa

    rates(a, _500=1.0, methods=["PUT"])
    assert a.request("GET", SCHEMA_PATH)[0] == 200
    status, _, _ = a.request("PUT", "/public/api/projects/SALES/variables/",
                             {"standard": {}, "local": {}})
    assert status == 500
    rates(a, _500=1.0, path_prefix="/projects/MARKETING/")
    assert a.request("GET", SCHEMA_PATH)[0] == 200
    assert a.request("GET", "/public/api/projects/MARKETING/metadata")[0] == 500
    assert a.request("GET", "/dip/publicapi/projects/MARKETING/metadata")[0] == 500
    got = a.json("GET", "/__emulator__/fault-rates", key=None)
    assert got["500"] == 1.0 and got["path_prefix"] == "/projects/MARKETING/"
    a.json("POST", "/__emulator__/reset-stats", key=None)
    assert a.stats()["faults"] == {}

    for bad in ({"500": 0.7, "503": 0.7}, {"nope": 0.1}, {"500": 2}, {"500": "x"},
                {"methods": 3}, {"seed": "x"}, {"stall_s": "long"}):
        err(a, "POST", "/fault-rates", 400, bad, prefix="/__emulator__", key=None)
    out = subprocess.run([sys.executable, EMULATOR, "--api-key", "k", "--fault-rate", "500"],
                         capture_output=True, timeout=10)
    assert out.returncode != 0 and b"KIND=RATE" in out.stderr
    out = subprocess.run([sys.executable, EMULATOR, "--api-key", "k", "--fault-rate",
                          "boom=0.1"], capture_output=True, timeout=10)
    assert out.returncode != 0 and b"Unknown fault kind" in out.stderr


def start_with_control(request, *args):
    ctl_file = tempfile.mktemp(prefix="dss-emu-ctl-")
    request.addfinalizer(lambda: os.path.exists(ctl_file) and os.unlink(ctl_file))
    emu = start(request, "--control-port-file", ctl_file, *args)
    with open(ctl_file) as f:
        emu.control_port = int(f.read())
    return emu


def control(emu, method, what, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", emu.control_port, timeout=10)
    try:
        return emu.json(method, "/__emulator__/" + what, body, key=None, conn=conn)
    finally:
        conn.close()


def test_pause_refuses_connections_and_resume_listens_on_the_same_port(request):
    emu = start_with_control(request)
    keep = emu.connect()
    assert emu.request("GET", SCHEMA_PATH, conn=keep)[0] == 200
    rates(emu, stall=1.0, stall_s=60)
    stalled = {}

    def stall():
        t0 = time.monotonic()
        stalled["result"] = raw_get(emu.port, SCHEMA_PATH, timeout=30)
        stalled["took"] = time.monotonic() - t0

    t = threading.Thread(target=stall)
    t.start()
    deadline = time.monotonic() + 5
    while emu.stats()["faults"].get("stall") != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert control(emu, "POST", "pause") == {"msg": "paused", "paused": True}
    t.join(10)
    assert stalled["result"] == (b"", b"", None) and stalled["took"] < 10  # closed by pause
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=5)
    # the kept-alive connection was closed too
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        emu.request("GET", SCHEMA_PATH, conn=keep)
    assert control(emu, "GET", "stats")["paused"] is True
    assert control(emu, "POST", "pause")["paused"] is True          # idempotent
    control(emu, "DELETE", "fault-rates")
    assert control(emu, "POST", "resume") == {"msg": "resumed", "paused": False}
    assert emu.api("GET", "/projects/SALES/datasets/orders/schema", conn=emu.connect())
    assert control(emu, "GET", "stats")["paused"] is False
    # a second cycle, and the control port serves nothing else
    control(emu, "POST", "pause")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=5)
    control(emu, "POST", "resume")
    assert emu.request("GET", SCHEMA_PATH, conn=emu.connect())[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", emu.control_port, timeout=10)
    assert emu.request("GET", SCHEMA_PATH, conn=conn)[0] == 404
    conn.close()
    # pausing through the API port answers there, then that port is down too
    assert emu.json("POST", "/__emulator__/pause", key=None, conn=emu.connect())["paused"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=5)
    control(emu, "POST", "resume")
    assert emu.request("GET", SCHEMA_PATH, conn=emu.connect())[0] == 200


def test_pause_needs_the_control_port(fresh):
    err(fresh, "POST", "/pause", 409, prefix="/__emulator__", key=None)
    assert fresh.api("GET", "/projects/SALES")


def test_dataset_with_a_lone_surrogate_in_its_name(fresh):
    """Hostile data: a name that has no UTF-8 form is served escaped in the listing."""
    status, _, _ = fresh.request("POST", "/public/api/projects/SALES/datasets/",
                                 b'{"name": "weird\\ud800name"}')
    assert status == 200
    status, _, data = fresh.request("GET", "/public/api/projects/SALES/datasets/")
    assert status == 200 and b'"weird\\ud800name"' in data
    names = [d["name"] for d in json.loads(data)]
    assert "weird\ud800name" in names and "orders" in names


# ---------------------------------------------------------------------------------------
# Instances: fixtures, --generate, process behaviour
# ---------------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(SHARED_FIXTURES), reason="shared fixtures absent")
def test_shared_fixtures_load(request):
    emu = start(request, "--fixture", SHARED_FIXTURES)
    keys = [p["projectKey"] for p in emu.api("GET", "/projects/")]
    assert keys == ["HOTELCANCELLATIONMODELMONITORING", "TITANICDATAIKU"]
    root = os.path.join(SHARED_FIXTURES, "HOTELCANCELLATIONMODELMONITORING")
    with open(os.path.join(root, "params.json"), encoding="utf-8") as f:
        params = json.load(f)
    s = emu.api("GET", "/projects/HOTELCANCELLATIONMODELMONITORING")
    assert s["name"] == params["name"] and s["versionTag"] == params["versionTag"]
    datasets = emu.api("GET", "/projects/HOTELCANCELLATIONMODELMONITORING/datasets/")
    assert len(datasets) == len(os.listdir(os.path.join(root, "datasets")))
    with open(os.path.join(root, "datasets", "R_Out.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    d = emu.api("GET", "/projects/HOTELCANCELLATIONMODELMONITORING/datasets/R_Out")
    assert {k: v for k, v in d.items() if k not in ("projectKey", "name")} == on_disk
    r = emu.api("GET", "/projects/HOTELCANCELLATIONMODELMONITORING/recipes/compute_R_Out")
    with open(os.path.join(root, "recipes", "compute_R_Out.r"), encoding="utf-8",
              newline="") as f:
        assert r["payload"] == f.read()
    assert emu.api("GET", "/projects/TITANICDATAIKU/variables/") == {"standard": {},
                                                                     "local": {}}
    art = emu.api("GET", "/projects/HOTELCANCELLATIONMODELMONITORING/wiki/readme")
    assert art["article"]["id"] == "1" and art["payload"].startswith("# Welcome")
    models = emu.api("GET", "/projects/TITANICDATAIKU/savedmodels/")
    assert [m["id"] for m in models] == ["VETNXOXT"]


def test_generate_is_deterministic(request):
    a = start(request, "--generate", "3,10")
    b = start(request, "--generate", "3,10")
    keys = [p["projectKey"] for p in a.api("GET", "/projects/")]
    assert keys == ["GEN001", "GEN002", "GEN003"]
    assert len(a.api("GET", "/projects/GEN002/datasets/")) == 10
    recipes = a.api("GET", "/projects/GEN002/recipes/")
    assert len(recipes) == 5
    assert {"python", "sql_query", "shaker", "join"} == {r["type"] for r in recipes}
    types = sorted(s["type"] for s in a.api("GET", "/projects/GEN002/scenarios/"))
    assert types == ["custom_python", "step_based"]
    for path in ("/projects/", "/projects/GEN003/datasets/", "/projects/GEN001/recipes/",
                 "/projects/GEN001/recipes/compute_ds_002", "/projects/GEN002/variables/",
                 "/projects/GEN002/scenarios/CHECK_DATA/payload",
                 "/projects/GEN001/datasets/ds_003/partitions"):
        assert a.request("GET", "/public/api" + path)[2] == \
            b.request("GET", "/public/api" + path)[2], path


def test_generate_large_starts_fast(request):
    t0 = time.monotonic()
    emu = start(request, "--generate", "20,50")
    assert time.monotonic() - t0 < 3
    assert len(emu.api("GET", "/projects/")) == 20
    assert len(emu.api("GET", "/projects/GEN020/datasets/")) == 50


def test_shutdown_and_missing_key(request):
    emu = start(request, "--fixture", DEMO)
    assert emu.json("POST", "/__emulator__/shutdown", key=None) == {"msg": "shutting down"}
    assert emu.proc.wait(timeout=5) == 0
    out = subprocess.run([sys.executable, EMULATOR, "--port", "0"], capture_output=True,
                         timeout=10)
    assert out.returncode != 0 and b"API key" in out.stderr
    out = subprocess.run([sys.executable, EMULATOR, "--api-key", "k", "--user", "x:y:SALES=rw"],
                         capture_output=True, timeout=10)
    assert out.returncode != 0
