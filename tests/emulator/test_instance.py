"""Tests of the emulator's instance scope (issue 10): users, groups, connections, general
settings, global variables, code envs, plugins and dev plugin files, project folders,
clusters, meanings; admin vs non-admin keys; secrets.

Run with: /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/emulator
"""

import base64
import io
import json

import pytest

from test_emulator import (ADMIN_KEY, typed_err as err, FORBIDDEN, ILLEGAL_ARG, NOT_FOUND, READER_KEY,
                           UNAUTHORIZED, USERS, WRITER_KEY, start)

ENC = "e:AES:X2:"
CODED = "com.dataiku.dip.exceptions.CodedException"


@pytest.fixture(scope="module")
def emu(request):
    return start(request, *USERS)


@pytest.fixture
def fresh(request):
    return start(request, *USERS)


def secrets(emu):
    return emu.json("GET", "/__emulator__/secrets", key=None)


def all_cleartexts(emu):
    d = secrets(emu)
    out = set(d["passwords"].values())
    for group in ("connections", "users", "plugins", "clusters"):
        for per in d[group].values():
            out.update(per.values())
    out.update(d["general-settings"].values())
    return {s for s in out if s}


# ---------------------------------------------------------------------------------------
# Every endpoint, admin key
# ---------------------------------------------------------------------------------------

def test_instance_info(emu):
    assert emu.api("GET", "/instance-info") == {
        "nodeId": "demo-design", "nodeName": "Demo design node", "nodeType": "DESIGN"}
    assert emu.api("GET", "/instance-info", key=READER_KEY)["nodeType"] == "DESIGN"


def test_users_and_groups_non_admin_views(emu):
    for key in (ADMIN_KEY, READER_KEY):
        users = emu.api("GET", "/users", key=key)
        assert [u["login"] for u in users] == ["admin", "alice", "bruno", "chloe", "dan"]
        for u in users:
            assert set(u) == {"login", "displayName", "groups", "email", "enabled"}
        alice = emu.api("GET", "/users/alice", key=key)
        assert alice == users[1]
        groups = emu.api("GET", "/groups/", key=key)
        assert [g["name"] for g in groups][:2] == ["administrators", "data_team"]
        assert all("admin" not in g for g in groups)
    err(emu, "GET", "/users/nobody", 404, NOT_FOUND, contains="nobody")


def test_admin_users(emu):
    listing = emu.api("GET", "/admin/users/")
    assert [u["login"] for u in listing] == ["admin", "alice", "bruno", "chloe", "dan"]
    assert "secrets" not in listing[1] and listing[1]["userProfile"] == "DESIGNER"
    full = emu.api("GET", "/admin/users/?includeSettings=True")
    assert full[1] == emu.api("GET", "/admin/users/alice")
    alice = full[1]
    for k in ("login", "displayName", "email", "enabled", "groups", "userProfile",
              "adminProperties", "userProperties", "secrets", "credentials", "preferences",
              "creationDate"):
        assert k in alice
    assert "password" not in alice
    tok = [s for s in alice["secrets"] if s["name"] == "GITHUB_TOKEN"][0]
    assert tok["secret"] is True and tok["value"].startswith(ENC)
    plain = [s for s in alice["secrets"] if s["name"] == "DEFAULT_REGION"][0]
    assert plain == {"name": "DEFAULT_REGION", "value": "eu-west-1", "secret": False}
    cred = alice["credentials"]["crm_postgres"]
    assert cred["user"] == "alice_crm" and cred["password"].startswith(ENC)
    err(emu, "GET", "/admin/users/nobody", 404, NOT_FOUND)


def test_admin_groups(fresh):
    groups = fresh.api("GET", "/admin/groups/")
    assert groups[0]["name"] == "administrators" and groups[0]["admin"] is True
    g = fresh.api("GET", "/admin/groups/hr")
    assert g["sourceType"] == "LDAP" and g["ldapGroupNames"]
    g["description"] = "People team"
    assert "msg" in fresh.api("PUT", "/admin/groups/hr", g)
    assert fresh.api("GET", "/admin/groups/hr")["description"] == "People team"
    err(fresh, "PUT", "/admin/groups/hr", 400, ILLEGAL_ARG, dict(g, name="other"))
    err(fresh, "GET", "/admin/groups/nope", 404, NOT_FOUND)
    err(fresh, "PUT", "/admin/groups/nope", 404, NOT_FOUND, g)


def test_admin_connections(emu):
    conns = emu.api("GET", "/admin/connections/")
    assert isinstance(conns, dict)
    assert list(conns) == ["filesystem_managed", "dwh_postgres", "crm_postgres", "s3_sales"]
    for name, c in conns.items():
        assert c["name"] == name and c["id"] == name and c["label"] == c["type"]
        for k in ("params", "usableBy", "allowedGroups", "allowWrite", "allowManagedDatasets",
                  "allowManagedFolders", "detailsReadability"):
            assert k in c
    one = emu.api("GET", "/admin/connections/dwh_postgres")
    assert one == {k: v for k, v in conns["dwh_postgres"].items() if k not in ("id", "label")}
    assert one["params"]["password"].startswith(ENC)
    s3 = emu.api("GET", "/admin/connections/s3_sales")
    assert s3["params"]["secretKey"].startswith(ENC)
    assert s3["params"]["accessKey"] == "AKIADEMO0000SALES"   # not a secret
    out = err(emu, "GET", "/admin/connections/nope", 404, ILLEGAL_ARG)
    assert out["message"] == "Connection 'nope' does not exist"


def test_connection_names(emu):
    assert emu.api("GET", "/connections/get-names?type=all") == [
        "filesystem_managed", "dwh_postgres", "crm_postgres", "s3_sales"]
    assert emu.api("GET", "/connections/get-names") == emu.api(
        "GET", "/connections/get-names?type=all")
    assert emu.api("GET", "/connections/get-names?type=PostgreSQL") == [
        "dwh_postgres", "crm_postgres"]
    # rita (reader) is in no group: only the connections usable by all
    assert emu.api("GET", "/connections/get-names?type=all", key=READER_KEY) == [
        "filesystem_managed", "dwh_postgres"]


def test_general_settings_and_variables(fresh):
    gs = fresh.api("GET", "/admin/general-settings")
    assert gs["ldapSettings"]["bindPassword"].startswith(ENC)
    assert gs["mailSettings"]["password"].startswith(ENC)
    gs["maxRunningActivities"] = 9
    assert "msg" in fresh.api("PUT", "/admin/general-settings", gs)
    assert fresh.api("GET", "/admin/general-settings") == gs
    v = fresh.api("GET", "/admin/variables/")
    assert v["env"] == "demo"
    v = {"only": [1, 2]}
    assert "msg" in fresh.api("PUT", "/admin/variables/", v)
    assert fresh.api("GET", "/admin/variables") == v
    err(fresh, "PUT", "/admin/variables/", 400, ILLEGAL_ARG, [1, 2])
    err(fresh, "PUT", "/admin/general-settings", 400, ILLEGAL_ARG, "not json{")


def test_code_envs(fresh):
    envs = fresh.api("GET", "/admin/code-envs/")
    assert [(e["envLang"], e["envName"]) for e in envs] == [("PYTHON", "py311_sales"),
                                                             ("R", "r_hr")]
    py = fresh.api("GET", "/admin/code-envs/PYTHON/py311_sales")
    assert py["specPackageList"].split("\n")[0] == "pandas==2.2.2"
    for k in ("specCondaEnvironment", "containerConfs", "desc", "deploymentMode"):
        assert k in py
    r = fresh.api("GET", "/admin/code-envs/R/r_hr")
    assert r["envLang"] == "R"
    assert fresh.api("GET", "/admin/code-envs/python/py311_sales") == py
    py["specPackageList"] = "numpy"
    assert fresh.api("PUT", "/admin/code-envs/PYTHON/py311_sales", py) == py   # J answer
    assert fresh.api("GET", "/admin/code-envs/PYTHON/py311_sales") == py
    err(fresh, "PUT", "/admin/code-envs/PYTHON/py311_sales", 400, ILLEGAL_ARG,
        dict(py, envName="other"))
    err(fresh, "GET", "/admin/code-envs/PYTHON/nope", 404, NOT_FOUND)
    err(fresh, "GET", "/admin/code-envs/JULIA/x", 400, ILLEGAL_ARG)


def test_clusters_and_meanings(fresh):
    cl = fresh.api("GET", "/admin/clusters/")
    assert cl == [{"id": "k8s-demo", "name": "Demo Kubernetes", "type": "manual",
                   "architecture": "KUBERNETES", "state": "NONE"}]
    c = fresh.api("GET", "/admin/clusters/k8s-demo")
    assert c["params"]["config"] and "permissions" in c
    c["usableByAll"] = True
    assert fresh.api("PUT", "/admin/clusters/k8s-demo", c) == c
    assert fresh.api("GET", "/admin/clusters/k8s-demo")["usableByAll"] is True
    assert fresh.api("GET", "/admin/clusters/k8s-demo/status") == {"state": "NONE"}
    err(fresh, "GET", "/admin/clusters/nope", 404, NOT_FOUND)
    err(fresh, "PUT", "/admin/clusters/k8s-demo", 400, ILLEGAL_ARG, dict(c, id="x"))

    ms = fresh.api("GET", "/meanings/", key=READER_KEY)
    assert ms == [{"id": "customer_segment", "label": "Customer segment",
                   "type": "VALUES_LIST", "description": "Segments used by sales reports"}]
    m = fresh.api("GET", "/meanings/customer_segment", key=READER_KEY)
    assert [e["value"] for e in m["entries"]] == ["SMB", "MID_MARKET", "ENTERPRISE"]
    m["label"] = "Segment"
    assert fresh.api("PUT", "/meanings/customer_segment", m) == m
    assert fresh.api("GET", "/meanings/customer_segment")["label"] == "Segment"
    err(fresh, "PUT", "/meanings/customer_segment", 403, FORBIDDEN, m, key=READER_KEY)
    err(fresh, "GET", "/meanings/nope", 404, NOT_FOUND)


def test_plugins_list_and_settings(fresh):
    pl = fresh.api("GET", "/plugins/")
    assert [(p["id"], p["isDev"]) for p in pl] == [("sales-tools", True), ("geoip", False)]
    assert pl[0]["meta"]["label"] == "Sales tools" and pl[0]["version"] == "0.3.0"
    assert fresh.api("GET", "/plugins/", key=READER_KEY) == pl
    s = fresh.api("GET", "/plugins/sales-tools/settings")
    assert s["presets"][0]["config"]["apiKey"].startswith(ENC)
    assert s["accessibleParameterSetDescs"][0]["id"] == "crm-api"
    s["codeEnvName"] = None
    assert "msg" in fresh.api("POST", "/plugins/sales-tools/settings", s)
    assert fresh.api("GET", "/plugins/sales-tools/settings") == s
    err(fresh, "PUT", "/plugins/sales-tools/settings", 405,
        "org.springframework.web.HttpRequestMethodNotSupportedException", s)
    err(fresh, "GET", "/plugins/nope/settings", 404, NOT_FOUND)
    err(fresh, "GET", "/plugins/sales-tools/settings?projectKey=SALES", 400, ILLEGAL_ARG)


# ---------------------------------------------------------------------------------------
# Dev plugin files
# ---------------------------------------------------------------------------------------

def tree_paths(nodes):
    out = []
    for n in nodes:
        out.append(n["path"] + ("/" if "children" in n else ""))
        out.extend(tree_paths(n.get("children", [])))
    return out


def raw(emu, method, path, body=None, key=ADMIN_KEY):
    status, resp, data = emu.request(method, "/public/api" + path, body, key=key)
    return status, resp, data


def test_plugin_contents_tree_and_files(emu):
    tree = emu.api("GET", "/plugins/sales-tools/contents")
    assert tree_paths(tree) == [
        "README.md", "custom-recipes/", "custom-recipes/clean-orders/",
        "custom-recipes/clean-orders/recipe.json", "custom-recipes/clean-orders/recipe.py",
        "plugin.json", "python-lib/", "python-lib/salestools/",
        "python-lib/salestools/__init__.py", "python-lib/salestools/cleaning.py"]
    for n in tree:
        assert set(n) >= {"name", "path", "lastModified"}
    status, resp, data = raw(emu, "GET", "/plugins/sales-tools/contents/plugin.json")
    assert status == 200 and json.loads(data)["id"] == "sales-tools"
    assert resp.getheader("Content-Type") == "application/json"
    status, resp, data = raw(emu, "GET", "/plugins/sales-tools/contents/python-lib/salestools/__init__.py")
    assert status == 200 and data == b""
    # the client's unquoted paths and a doubled slash
    status, _, data = raw(emu, "GET", "/plugins/sales-tools/contents//python-lib/salestools/cleaning.py")
    assert status == 200 and data.startswith(b'"""Helpers')
    err(emu, "GET", "/plugins/sales-tools/contents/nope.py", 404, NOT_FOUND)
    err(emu, "GET", "/plugins/sales-tools/contents/python-lib", 400, ILLEGAL_ARG)
    err(emu, "GET", "/plugins/sales-tools/contents/a/../plugin.json", 400, ILLEGAL_ARG)
    err(emu, "GET", "/plugins/geoip/contents", 400, ILLEGAL_ARG, contains="not a dev plugin")
    err(emu, "GET", "/plugins/geoip/contents/plugin.json", 400, ILLEGAL_ARG)
    err(emu, "GET", "/plugins/nope/contents", 404, NOT_FOUND)


def test_plugin_file_create_rename_move_delete(fresh):
    P = "/plugins/sales-tools"
    data = bytes(range(256)) * 3
    assert "msg" in fresh.api("POST", P + "/contents/python-lib/salestools/new/deep.bin", data)
    status, resp, got = raw(fresh, "GET", P + "/contents/python-lib/salestools/new/deep.bin")
    assert status == 200 and got == data
    assert resp.getheader("Content-Type") == "application/octet-stream"
    paths = tree_paths(fresh.api("GET", P + "/contents"))
    assert "python-lib/salestools/new/" in paths   # parents created
    # overwrite, empty file
    fresh.api("POST", P + "/contents/python-lib/salestools/new/deep.bin", b"")
    assert raw(fresh, "GET", P + "/contents/python-lib/salestools/new/deep.bin")[2] == b""
    # mkdir
    assert "msg" in fresh.api("POST", P + "/folders/resource/img")
    assert "resource/img/" in tree_paths(fresh.api("GET", P + "/contents"))
    err(fresh, "POST", P + "/contents/resource", 400, ILLEGAL_ARG, b"x")   # a folder
    # rename (same folder)
    fresh.api("POST", P + "/contents-actions/rename",
              {"oldPath": "python-lib/salestools/new/deep.bin", "newName": "d2.bin"})
    paths = tree_paths(fresh.api("GET", P + "/contents"))
    assert "python-lib/salestools/new/d2.bin" in paths
    assert "python-lib/salestools/new/deep.bin" not in paths
    # move a file into a folder, then a whole folder
    fresh.api("POST", P + "/contents-actions/move",
              {"oldPath": "python-lib/salestools/new/d2.bin", "newPath": "resource/img"})
    assert raw(fresh, "GET", P + "/contents/resource/img/d2.bin")[0] == 200
    fresh.api("POST", P + "/contents-actions/move",
              {"oldPath": "resource/img", "newPath": ""})
    paths = tree_paths(fresh.api("GET", P + "/contents"))
    assert "img/" in paths and "img/d2.bin" in paths and "resource/img/" not in paths
    # errors
    err(fresh, "POST", P + "/contents-actions/rename",
        400, ILLEGAL_ARG, {"oldPath": "img/d2.bin", "newName": "a/b"})
    err(fresh, "POST", P + "/contents-actions/rename",
        404, NOT_FOUND, {"oldPath": "img/none", "newName": "x"})
    err(fresh, "POST", P + "/contents-actions/rename",
        400, ILLEGAL_ARG, {"oldPath": "README.md", "newName": "plugin.json"})
    err(fresh, "POST", P + "/contents-actions/move",
        404, NOT_FOUND, {"oldPath": "img/d2.bin", "newPath": "no/such"})
    err(fresh, "POST", P + "/contents-actions/move",
        400, ILLEGAL_ARG, {"oldPath": "python-lib", "newPath": "python-lib/salestools"})
    # delete a file, then a folder with what it holds
    assert "msg" in fresh.api("DELETE", P + "/contents/img/d2.bin")
    err(fresh, "DELETE", P + "/contents/img/d2.bin", 404, NOT_FOUND)
    fresh.api("DELETE", P + "/contents/python-lib")
    paths = tree_paths(fresh.api("GET", P + "/contents"))
    assert not [p for p in paths if p.startswith("python-lib")]
    err(fresh, "POST", "/plugins/geoip/contents/x.py", 400, ILLEGAL_ARG, b"x")


# ---------------------------------------------------------------------------------------
# Project folders
# ---------------------------------------------------------------------------------------

def test_project_folders(fresh):
    root = fresh.api("GET", "/project-folders/ROOT")
    assert root == {"id": "ROOT", "childrenIds": ["fBusin01", "fPeopl04", "fArchi05"],
                    "projectKeys": []}
    b = fresh.api("GET", "/project-folders/fBusin01")
    assert b == {"id": "fBusin01", "name": "Business", "parentId": "ROOT",
                 "childrenIds": ["fSales02"], "projectKeys": []}
    s = fresh.api("GET", "/project-folders/fSales02")
    assert s["projectKeys"] == ["SALES"] and s["childrenIds"] == ["fCampa03"]
    assert fresh.api("GET", "/project-folders/fCampa03")["projectKeys"] == ["MARKETING"]
    assert fresh.api("GET", "/project-folders/locate-project/HR_ANALYTICS")["id"] == "fPeopl04"
    assert fresh.api("GET", "/project-folders/locate-project/SALES")["name"] == "Sales & Marketing"
    err(fresh, "GET", "/project-folders/nope", 404, NOT_FOUND)
    err(fresh, "GET", "/project-folders/locate-project/NOPE", 404, NOT_FOUND)

    st = fresh.api("GET", "/project-folders/fSales02/settings")
    assert set(st) == {"name", "owner", "permissions"} and st["owner"] == "alice"
    st["name"] = "Sales"
    assert "msg" in fresh.api("PUT", "/project-folders/fSales02/settings", st)
    assert fresh.api("GET", "/project-folders/fSales02")["name"] == "Sales"
    err(fresh, "PUT", "/project-folders/fArchi05/settings", 400, ILLEGAL_ARG,
        {"name": "People", "owner": "admin", "permissions": []})   # a sibling's name
    err(fresh, "PUT", "/project-folders/fArchi05/settings", 400, ILLEGAL_ARG,
        {"name": "", "owner": "admin", "permissions": []})
    err(fresh, "GET", "/project-folders/ROOT/settings", 400, ILLEGAL_ARG)


def test_project_folders_reader(emu):
    """Every folder is visible; projects only where the key may read them (rita: SALES)."""
    assert emu.api("GET", "/project-folders/ROOT", key=READER_KEY)["childrenIds"] == [
        "fBusin01", "fPeopl04", "fArchi05"]
    assert emu.api("GET", "/project-folders/fSales02", key=READER_KEY)["projectKeys"] == ["SALES"]
    assert emu.api("GET", "/project-folders/fCampa03", key=READER_KEY)["projectKeys"] == []
    assert emu.api("GET", "/project-folders/fCampa03", key=WRITER_KEY)["projectKeys"] == [
        "MARKETING"]
    assert emu.api("GET", "/project-folders/locate-project/SALES", key=READER_KEY)["id"] == \
        "fSales02"
    err(emu, "GET", "/project-folders/locate-project/MARKETING", 403, FORBIDDEN, key=READER_KEY)
    err(emu, "GET", "/project-folders/locate-project/NOPE", 403, FORBIDDEN, key=READER_KEY)


def test_generated_instance_has_a_minimal_admin_scope(request):
    e = start(request, "--generate", "3,2", *USERS)
    assert [u["login"] for u in e.api("GET", "/admin/users/")] == ["admin"]
    assert [g["name"] for g in e.api("GET", "/admin/groups/")] == ["administrators"]
    assert list(e.api("GET", "/admin/connections/")) == ["filesystem_managed"]
    assert e.api("GET", "/admin/variables/") == {}
    assert e.api("GET", "/admin/code-envs/") == [] and e.api("GET", "/plugins/") == []
    assert e.api("GET", "/admin/clusters/") == [] and e.api("GET", "/meanings/") == []
    assert e.api("GET", "/project-folders/ROOT") == {
        "id": "ROOT", "childrenIds": [], "projectKeys": ["GEN001", "GEN002", "GEN003"]}
    assert e.api("GET", "/project-folders/locate-project/GEN002")["id"] == "ROOT"
    assert e.api("GET", "/instance-info")["nodeId"] == "dssfs-emulator"
    # --generate with the demo: the demo's scope, generated projects in ROOT
    e2 = start(request, "--generate", "1,1", "--fixture",
               __import__("test_emulator").DEMO, *USERS)
    assert e2.api("GET", "/project-folders/ROOT")["projectKeys"] == ["GEN001"]
    assert len(e2.api("GET", "/admin/users/")) == 5


# ---------------------------------------------------------------------------------------
# Rights
# ---------------------------------------------------------------------------------------

ADMIN_ONLY = [
    ("GET", "/admin/users/"), ("GET", "/admin/users/alice"), ("PUT", "/admin/users/alice"),
    ("GET", "/admin/groups/"), ("GET", "/admin/groups/hr"), ("PUT", "/admin/groups/hr"),
    ("GET", "/admin/connections/"), ("GET", "/admin/connections/dwh_postgres"),
    ("PUT", "/admin/connections/dwh_postgres"),
    ("GET", "/admin/general-settings"), ("PUT", "/admin/general-settings"),
    ("GET", "/admin/variables/"), ("PUT", "/admin/variables/"),
    ("GET", "/admin/code-envs/"), ("GET", "/admin/code-envs/PYTHON/py311_sales"),
    ("PUT", "/admin/code-envs/PYTHON/py311_sales"),
    ("GET", "/admin/clusters/"), ("GET", "/admin/clusters/k8s-demo"),
    ("PUT", "/admin/clusters/k8s-demo"), ("GET", "/admin/clusters/k8s-demo/status"),
    ("PUT", "/meanings/customer_segment"),
    ("GET", "/plugins/sales-tools/settings"), ("POST", "/plugins/sales-tools/settings"),
    ("GET", "/plugins/sales-tools/contents"), ("GET", "/plugins/sales-tools/contents/plugin.json"),
    ("POST", "/plugins/sales-tools/contents/x.py"), ("DELETE", "/plugins/sales-tools/contents/plugin.json"),
    ("POST", "/plugins/sales-tools/folders/x"),
    ("POST", "/plugins/sales-tools/contents-actions/rename"),
    ("POST", "/plugins/sales-tools/contents-actions/move"),
    ("GET", "/project-folders/fSales02/settings"), ("PUT", "/project-folders/fSales02/settings"),
    # rights are checked before existence
    ("GET", "/admin/users/nobody"), ("GET", "/admin/connections/nope"),
    ("GET", "/plugins/nope/contents"),
]


@pytest.mark.parametrize("method,path", ADMIN_ONLY)
def test_admin_routes_refuse_a_non_admin_key(emu, method, path):
    for key in (READER_KEY, WRITER_KEY):
        out = err(emu, method, path, 403, FORBIDDEN, {"name": "x"}, key=key)
        assert out["message"] == ("Action forbidden, you are not an administrator of the "
                                  "DSS instance")
    for prefix in ("/public/api", "/dip/publicapi"):
        status, _, _ = emu.request(method, prefix + path, {"name": "x"}, key="bad-key")
        assert status == 401


def test_non_admin_views_and_nothing_changed(emu):
    for path in ("/instance-info", "/users", "/users/alice", "/groups",
                 "/connections/get-names?type=all", "/plugins/", "/project-folders/ROOT",
                 "/project-folders/fBusin01", "/meanings/", "/meanings/customer_segment",
                 "/current-user"):
        emu.api("GET", path, key=READER_KEY)
        emu.api("GET", path, prefix="/dip/publicapi", key=READER_KEY)
    err(emu, "GET", "/users", 401, UNAUTHORIZED, key=None)
    # the refused writes above changed nothing
    assert emu.api("GET", "/admin/groups/hr")["description"] == "Human resources (from LDAP)"


def test_per_project_rules_still_hold(emu):
    assert [p["projectKey"] for p in emu.api("GET", "/projects/", key=READER_KEY)] == ["SALES"]
    err(emu, "GET", "/projects/MARKETING/datasets/", 403, FORBIDDEN, key=READER_KEY)
    err(emu, "GET", "/projects/SALES/permissions", 403, FORBIDDEN, key=READER_KEY)


def test_current_user(fresh):
    me = fresh.api("GET", "/current-user")
    assert me["login"] == "admin" and "password" not in me
    rita = fresh.api("GET", "/current-user", key=READER_KEY)
    assert rita["login"] == "rita" and rita["groups"] == []
    rita["displayName"] = "Rita R."
    rita["groups"] = ["administrators"]   # a user cannot put himself in a group
    fresh.api("PUT", "/current-user", rita, key=READER_KEY)
    again = fresh.api("GET", "/current-user", key=READER_KEY)
    assert again["displayName"] == "Rita R." and again["groups"] == []
    err(fresh, "PUT", "/current-user", 400, ILLEGAL_ARG, dict(rita, login="x"), key=READER_KEY)


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------

SECRET_GETS = ["/admin/users/", "/admin/users/?includeSettings=true", "/admin/users/alice",
               "/admin/users/chloe", "/admin/connections/", "/admin/connections/dwh_postgres",
               "/admin/connections/s3_sales", "/admin/connections/crm_postgres",
               "/admin/general-settings", "/plugins/sales-tools/settings",
               "/admin/clusters/k8s-demo", "/current-user", "/users", "/users/alice"]


def test_no_cleartext_secret_is_ever_served(emu):
    clear = all_cleartexts(emu)
    assert "dwh-demo-password-1" in clear and "ghp_demoAliceToken0001" in clear
    assert "demo-admin-password" in clear and "crm-demo-api-key-6" in clear
    assert len(clear) == 11
    for path in SECRET_GETS:
        for prefix in ("/public/api", "/dip/publicapi"):
            status, _, data = emu.request("GET", prefix + path)
            assert status == 200
            text = data.decode("utf-8")
            for s in clear:
                assert s not in text, (path, s)


def test_the_encrypted_form(emu):
    c = emu.api("GET", "/admin/connections/dwh_postgres")
    pw = c["params"]["password"]
    assert pw.startswith(ENC)
    assert len(base64.b64decode(pw[len(ENC):])) == 32
    # the same on every GET, in the listing too; different secrets differ
    assert emu.api("GET", "/admin/connections/dwh_postgres") == c
    assert emu.api("GET", "/admin/connections/")["dwh_postgres"]["params"]["password"] == pw
    assert emu.api("GET", "/admin/connections/crm_postgres")["params"]["password"] != pw
    # empty and non-secret fields are served as they are
    assert emu.api("GET", "/admin/users/alice")["credentials"]["crm_postgres"]["user"] == \
        "alice_crm"


def test_round_trips_leave_every_secret_as_it_was(fresh):
    before = secrets(fresh)
    assert before["connections"]["dwh_postgres"] == {"params.password": "dwh-demo-password-1"}
    assert before["users"]["alice"] == {
        "secrets[GITHUB_TOKEN].value": "ghp_demoAliceToken0001",
        "credentials.crm_postgres.password": "alice-crm-pass-42"}
    assert before["plugins"]["sales-tools"] == {
        "presets[crm-prod].config.apiKey": "crm-demo-api-key-6"}
    for get, put, method in [
            ("/admin/connections/dwh_postgres", None, "PUT"),
            ("/admin/connections/s3_sales", None, "PUT"),
            ("/admin/connections/crm_postgres", None, "PUT"),
            ("/admin/users/alice", None, "PUT"), ("/admin/users/chloe", None, "PUT"),
            ("/admin/users/admin", None, "PUT"),
            ("/admin/general-settings", None, "PUT"),
            ("/plugins/sales-tools/settings", None, "POST"),
            ("/admin/clusters/k8s-demo", None, "PUT")]:
        obj = fresh.api("GET", get)
        fresh.api(method, put or get, obj)
        assert fresh.api("GET", get) == obj, get
    # the whole listing of connections, sent back one by one
    for name, c in fresh.api("GET", "/admin/connections/").items():
        fresh.api("PUT", "/admin/connections/" + name,
                  {k: v for k, v in c.items() if k not in ("id", "label")})
    # the reader's own settings (no secrets) and the admin's
    fresh.api("PUT", "/current-user", fresh.api("GET", "/current-user"))
    assert secrets(fresh) == before


def test_a_cleartext_value_replaces_the_secret(fresh):
    c = fresh.api("GET", "/admin/connections/dwh_postgres")
    old = c["params"]["password"]
    c["params"]["password"] = "new-cleartext"
    fresh.api("PUT", "/admin/connections/dwh_postgres", c)
    assert secrets(fresh)["connections"]["dwh_postgres"] == {"params.password": "new-cleartext"}
    new = fresh.api("GET", "/admin/connections/dwh_postgres")["params"]["password"]
    assert new.startswith(ENC) and new != old
    # an old encrypted value DSS issued still decrypts (DSS decrypts what it encrypted)
    c["params"]["password"] = old
    fresh.api("PUT", "/admin/connections/dwh_postgres", c)
    assert secrets(fresh)["connections"]["dwh_postgres"] == {
        "params.password": "dwh-demo-password-1"}
    # empty = no secret
    c["params"]["password"] = ""
    fresh.api("PUT", "/admin/connections/dwh_postgres", c)
    assert fresh.api("GET", "/admin/connections/dwh_postgres")["params"]["password"] == ""

    u = fresh.api("GET", "/admin/users/alice")
    u["secrets"].append({"name": "NEW", "value": "clear-new", "secret": True})
    u["credentials"]["crm_postgres"]["password"] = "crm-new"
    u["password"] = "login-password-2"
    fresh.api("PUT", "/admin/users/alice", u)
    d = secrets(fresh)
    assert d["users"]["alice"]["secrets[NEW].value"] == "clear-new"
    assert d["users"]["alice"]["credentials.crm_postgres.password"] == "crm-new"
    assert d["users"]["alice"]["secrets[GITHUB_TOKEN].value"] == "ghp_demoAliceToken0001"
    assert d["passwords"]["alice"] == "login-password-2"
    got = fresh.api("GET", "/admin/users/alice")
    assert "password" not in got and got["secrets"][-1]["value"].startswith(ENC)

    gs = fresh.api("GET", "/admin/general-settings")
    gs["ldapSettings"]["bindPassword"] = "ldap-new"
    fresh.api("PUT", "/admin/general-settings", gs)
    assert secrets(fresh)["general-settings"]["ldapSettings.bindPassword"] == "ldap-new"


def test_an_encrypted_value_the_instance_never_issued_is_refused(fresh):
    before = secrets(fresh)
    c = fresh.api("GET", "/admin/connections/dwh_postgres")
    c["params"]["password"] = ENC + "Zm9yZWlnbg=="
    out = err(fresh, "PUT", "/admin/connections/dwh_postgres", 400, CODED, c)
    assert "params.password" in out["message"]
    u = fresh.api("GET", "/admin/users/alice")
    u["secrets"][0]["value"] = u["secrets"][0]["value"][:-4] + "AAA="
    err(fresh, "PUT", "/admin/users/alice", 400, CODED, u)
    assert secrets(fresh) == before


def test_user_put_checks(fresh):
    u = fresh.api("GET", "/admin/users/bruno")
    err(fresh, "PUT", "/admin/users/bruno", 400, ILLEGAL_ARG, dict(u, login="x"))
    err(fresh, "PUT", "/admin/users/nobody", 404, NOT_FOUND, u)
    err(fresh, "PUT", "/admin/users/bruno", 400, ILLEGAL_ARG, "")
    u["displayName"] = "B. Costa"
    assert "msg" in fresh.api("PUT", "/admin/users/bruno", u)
    got = fresh.api("GET", "/admin/users/bruno")
    assert got["displayName"] == "B. Costa" and got["creationDate"] == u["creationDate"]
    assert fresh.api("GET", "/users/bruno")["displayName"] == "B. Costa"


def test_connection_put_checks(fresh):
    c = fresh.api("GET", "/admin/connections/crm_postgres")
    err(fresh, "PUT", "/admin/connections/crm_postgres", 400, ILLEGAL_ARG, dict(c, name="x"))
    err(fresh, "PUT", "/admin/connections/nope", 404, ILLEGAL_ARG, c)
    c["allowedGroups"] = []
    fresh.api("PUT", "/admin/connections/crm_postgres", c)
    assert "crm_postgres" not in fresh.api("GET", "/connections/get-names?type=all",
                                           key=READER_KEY)
    c["usableBy"] = "ALL"
    fresh.api("PUT", "/admin/connections/crm_postgres", c)
    assert "crm_postgres" in fresh.api("GET", "/connections/get-names?type=all",
                                       key=READER_KEY)


def test_control_endpoint_secrets_method(emu):
    status, _, _ = emu.request("POST", "/__emulator__/secrets", key=None)
    assert status == 405


# ---------------------------------------------------------------------------------------
# The official Python client, unchanged (skipped unless importable: see test_activity.py)
# ---------------------------------------------------------------------------------------

def test_official_client_on_the_instance_scope(fresh):
    from test_activity import client_module
    dataikuapi = client_module()
    admin = dataikuapi.DSSClient("http://127.0.0.1:%d" % fresh.port, ADMIN_KEY)

    # plugins: settings, and a dev plugin's files
    assert {p["id"] for p in admin.list_plugins()} == {"geoip", "sales-tools"}
    plugin = admin.get_plugin("sales-tools")
    names = [n["name"] for n in plugin.list_files()]
    assert "plugin.json" in names and "python-lib" in names
    assert b"salestools" in plugin.get_file("README.md").read()
    plugin.put_file("python-lib/salestools/extra.py", io.BytesIO(b"X = 1\n"))
    assert plugin.get_file("python-lib/salestools/extra.py").read() == b"X = 1\n"
    plugin.rename_file("python-lib/salestools/extra.py", "more.py")
    plugin.move_file("python-lib/salestools/more.py", "python-lib")
    assert plugin.get_file("python-lib/more.py").read() == b"X = 1\n"
    settings = plugin.get_settings()
    settings.get_raw()["codeEnvName"] = "py311_client"
    settings.save()
    assert plugin.get_settings().get_raw()["codeEnvName"] == "py311_client"

    # project folders
    root = admin.get_root_project_folder()
    children = {f.name: f for f in root.list_child_folders()}
    assert set(children) == {"Business", "People", "Archive"}
    sales = {f.name: f for f in children["Business"].list_child_folders()}["Sales & Marketing"]
    assert sales.list_project_keys() == ["SALES"]
    assert sales.get_path() == "/Business/Sales & Marketing"
    fs = sales.get_settings()
    fs.set_name("Sales and Marketing")
    fs.save()
    assert admin.get_project_folder(sales.id).get_name() == "Sales and Marketing"

    # admin objects
    variables = admin.get_global_variables()
    variables["from_client"] = 1
    admin.set_variables(variables)
    assert admin.get_global_variables()["from_client"] == 1
    general = admin.get_general_settings()
    general.get_raw()["dssfsNote"] = "client"
    general.save()
    assert admin.get_general_settings().get_raw()["dssfsNote"] == "client"
    user = admin.get_user("alice").get_settings()
    user.get_raw()["displayName"] = "Alice C."
    user.save()
    assert admin.get_user("alice").get_settings().get_raw()["displayName"] == "Alice C."
    conn = admin.get_connection("dwh_postgres")
    definition = conn.get_definition()
    assert definition["params"]["password"].startswith("e:")
    definition["params"]["port"] = 6544
    conn.set_definition(definition)
    assert conn.get_definition()["params"]["port"] == 6544
    assert admin.get_group(admin.list_groups()[0]["name"]).get_definition()["name"]
    env = admin.get_code_env("PYTHON", "py311_sales")
    assert env.get_definition()["envName"] == "py311_sales"
    assert admin.list_meanings() and admin.list_clusters() is not None
