#!/usr/bin/env python3
"""Emulator of the Dataiku DSS public REST API, for dssfs tests and benchmarks.

Standard library only (runs under Debian's /usr/bin/python3, 3.11+).

It serves a DSS instance held in memory, loaded from fixture folders in DSS's own
project-configuration layout (``--fixture DIR``, default: ``demo/`` beside this file)
and/or generated (``--generate P,D``). Every route is served under both ``/public/api``
and ``/dip/publicapi``. It checks API keys and per-project rights, adds latency, injects
faults, counts and logs requests. See README.md beside this file for the full contract.

Usage::

    python3 tests/emulator/dss_emulator.py --api-key secret --port 0 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import base64
import binascii
import email.utils
import hashlib
import io
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_to_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURE = os.path.join(HERE, "demo")

API_PREFIXES = (("public", "api"), ("dip", "publicapi"))
CONTROL_PREFIX = "__emulator__"

# errorType values, as DSS (a Java server) names them.
ERR_NOT_FOUND = "com.dataiku.dip.server.controllers.NotFoundException"
ERR_UNAUTHORIZED = "com.dataiku.dip.exceptions.UnauthorizedException"
ERR_FORBIDDEN = "com.dataiku.dip.security.model.SecurityException"
ERR_ILLEGAL_ARGUMENT = "java.lang.IllegalArgumentException"
ERR_METHOD = "org.springframework.web.HttpRequestMethodNotSupportedException"
ERR_CODED = "com.dataiku.dip.exceptions.CodedException"
ERR_INTERNAL = "java.lang.RuntimeException"

# Rights a key can have on a project, in increasing order.
LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}

MS_DAY = 86_400_000
T_2020 = 1_577_836_800_000  # 2020-01-01T00:00:00Z
T_2025 = 1_735_689_600_000  # 2025-01-01T00:00:00Z

# Top-level keys of params.json that REST serves under /metadata and /permissions;
# everything else (but "name", served as metadata "label") is /settings.
METADATA_KEYS = ("description", "shortDesc", "tags", "checklists", "custom", "customFields")
PERMISSION_KEYS = ("owner", "permissions", "additionalDashboardUsers", "dashboardAuthorizations")

# Object-metadata view of a dataset/recipe definition: metadata key -> definition key.
OBJECT_METADATA_FIELDS = (
    ("description", "description", str, None),
    ("shortDesc", "shortDesc", str, None),
    ("tags", "tags", list, list),
    ("checklists", "checklists", dict, lambda: {"checklists": []}),
    ("custom", "customMeta", dict, lambda: {"kv": {}}),
    ("customFields", "customFields", dict, dict),
)


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered as ``status`` + a DSS-like JSON error body."""

    def __init__(self, status, error_type, message, detailed=None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.detailed = detailed or message

    def body(self):
        return {"errorType": self.error_type, "message": self.message,
                "detailedMessage": self.detailed}


def bad_request(message):
    return ApiError(400, ERR_ILLEGAL_ARGUMENT, message)


def not_found(kind, project_key, name=None):
    what = project_key if name is None else "%s.%s" % (project_key, name)
    return ApiError(404, ERR_NOT_FOUND, "%s does not exist: %s" % (kind, what))


class RawResponse:
    """A non-JSON success answer (e.g. the export zip)."""

    def __init__(self, data, content_type, headers=()):
        self.data = data
        self.content_type = content_type
        self.headers = tuple(headers)


def stable_hash(*parts):
    """A 64-bit hash of strings that is the same on every run (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def make_tag(version, login, when_ms):
    return {"versionNumber": version, "lastModifiedBy": {"login": login},
            "lastModifiedOn": when_ms}


def made_up_tags(login, *seed):
    """Deterministic (versionTag, creationTag) for an object whose files lack them.

    lastModifiedOn lies in 2020-04..2024-12, creation up to 90 days earlier (epoch ms).
    """
    h = stable_hash(*seed)
    span = T_2025 - T_2020 - 91 * MS_DAY
    modified = T_2020 + 91 * MS_DAY + h % span
    created = modified - (h >> 24) % (90 * MS_DAY) - 1000
    return make_tag(1, login, modified), make_tag(0, login, created)


def with_identity(identity, body, tags=None):
    """``identity`` keys first (unless ``body`` already has them in place), then body.

    ``tags`` = (versionTag, creationTag) replaces those keys where the body has them,
    else they are appended; so a GET -> edit -> PUT round trip keeps the key order.
    """
    out = {}
    for k, v in identity.items():
        if k not in body:
            out[k] = v
    for k, v in body.items():
        if k in identity:
            out[k] = identity[k]
        elif tags is not None and k == "versionTag":
            out[k] = tags[0]
        elif tags is not None and k == "creationTag":
            out[k] = tags[1]
        else:
            out[k] = v
    if tags is not None:
        out.setdefault("versionTag", tags[0])
        out.setdefault("creationTag", tags[1])
    return out


def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}


def json_bytes(obj):
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a name created as "weird\ud800name") has no UTF-8 form:
        # send it as JSON does, escaped (hostile-data tests).
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def decode_segment(seg):
    """Percent-decode one path segment (http.server hands us latin-1 text)."""
    try:
        raw = seg.encode("latin-1")
    except UnicodeEncodeError:
        raw = seg.encode("utf-8")
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def parse_bool(value, name):
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no", ""):
        return False
    raise bad_request("Invalid boolean for parameter %s: %s" % (name, value))


def read_json_file(path):
    with open(path, encoding="utf-8-sig") as f:
        return json.load(f)


def read_text_file(path):
    # newline="" keeps \r\n as it is in the file.
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return f.read()


# ---------------------------------------------------------------------------------------
# The instance model
# ---------------------------------------------------------------------------------------

class Project:
    """One project, as REST serves it. Objects are kept as the dicts GET returns."""

    def __init__(self, key):
        self.key = key
        self.metadata = {}
        self.permissions = {}
        self.settings = {}          # holds the project's versionTag / creationTag
        self.variables = {"standard": {}, "local": {}}
        self.tags = {"tags": {}}
        self.datasets = {}          # name -> full definition
        self.recipes = {}           # name -> "recipe" part of {recipe, payload}
        self.payloads = {}          # recipe name -> payload text
        self.payload_ext = {}       # recipe name -> payload file extension (export)
        self.scenarios = {}         # id -> definition
        self.scripts = {}           # scenario id -> script (custom_python)
        self.wiki = None            # wiki settings {projectKey, homeArticleId, taxonomy}
        self.articles = {}          # article id -> article (without payload)
        self.article_payloads = {}  # article id -> markdown
        self.saved_models = {}      # id -> settings
        self.managed_folders = {}   # id -> settings

    @property
    def owner(self):
        return self.permissions.get("owner", "admin")

    def summary(self):
        md, st = self.metadata, self.settings
        out = {"projectKey": self.key, "name": md.get("label", self.key)}
        if "projectType" in st:
            out["projectType"] = st["projectType"]
        out["owner"] = self.owner
        if "projectStatus" in st:
            out["projectStatus"] = st["projectStatus"]
        if "shortDesc" in md:
            out["shortDesc"] = md["shortDesc"]
        out["tags"] = md.get("tags", [])
        out["versionTag"] = st.get("versionTag")
        out["creationTag"] = st.get("creationTag")
        return out

    def set_params(self, params):
        """Split a params.json object into metadata / permissions / settings."""
        md = {"label": params.get("name", self.key)}
        for k in METADATA_KEYS:
            if k in params:
                md[k] = params[k]
        md.setdefault("tags", [])
        md.setdefault("checklists", {"checklists": []})
        md.setdefault("custom", {"kv": {}})
        md.setdefault("customFields", {})
        perms = {k: params[k] for k in PERMISSION_KEYS if k in params}
        perms.setdefault("owner", "admin")
        perms.setdefault("permissions", [])
        taken = set(METADATA_KEYS) | set(PERMISSION_KEYS) | {"name"}
        settings = {k: v for k, v in params.items() if k not in taken}
        if "versionTag" not in settings or "creationTag" not in settings:
            vt, ct = made_up_tags(perms["owner"], self.key, "project")
            settings.setdefault("versionTag", vt)
            settings.setdefault("creationTag", ct)
        self.metadata, self.permissions, self.settings = md, perms, settings

    def params(self):
        """Inverse of set_params (for the export zip)."""
        out = {"name": self.metadata.get("label", self.key)}
        out.update(self.permissions)
        out.update(self.settings)
        for k, v in self.metadata.items():
            if k != "label":
                out[k] = v
        return out

    # --- adding objects (fixture loading and generation) -----------------------------

    def _tags(self, kind, name, body):
        if "versionTag" in body and "creationTag" in body:
            return None
        vt, ct = made_up_tags(self.owner, self.key, kind, name)
        return (body.get("versionTag", vt), body.get("creationTag", ct))

    def add_dataset(self, name, body):
        ident = {"projectKey": self.key, "name": name}
        self.datasets[name] = with_identity(ident, body, self._tags("dataset", name, body))

    def add_recipe(self, name, body, payload="", ext=None):
        ident = {"projectKey": self.key, "name": name}
        self.recipes[name] = with_identity(ident, body, self._tags("recipe", name, body))
        self.payloads[name] = payload
        self.payload_ext[name] = ext

    def add_scenario(self, sid, body, script=None):
        ident = {"projectKey": self.key, "id": sid}
        self.scenarios[sid] = with_identity(ident, body, self._tags("scenario", sid, body))
        if script is not None or body.get("type") == "custom_python":
            self.scripts[sid] = script or ""

    def add_article(self, aid, body, payload=""):
        ident = {"projectKey": self.key, "id": aid}
        self.articles[aid] = with_identity(ident, body, self._tags("article", aid, body))
        self.article_payloads[aid] = payload

    def add_saved_model(self, mid, body):
        ident = {"projectKey": self.key, "id": mid}
        self.saved_models[mid] = with_identity(ident, body, self._tags("savedmodel", mid, body))

    def add_managed_folder(self, fid, body):
        ident = {"projectKey": self.key, "id": fid}
        self.managed_folders[fid] = with_identity(ident, body,
                                                  self._tags("managedfolder", fid, body))


def _json_files(folder):
    """Sorted (stem, path) of the *.json files of a folder (none if it is absent)."""
    if not os.path.isdir(folder):
        return []
    out = []
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".json") and os.path.isfile(os.path.join(folder, fn)):
            out.append((fn[:-5], os.path.join(folder, fn)))
    return out


def _payload_file(folder, stem):
    """The payload file of recipe ``stem``: ``<stem>.<ext>``, ext any but json."""
    best = None
    for fn in sorted(os.listdir(folder)):
        if not fn.startswith(stem + ".") or fn == stem + ".json":
            continue
        ext = fn[len(stem) + 1:]
        if ext and "." not in ext and os.path.isfile(os.path.join(folder, fn)):
            best = best or (ext, os.path.join(folder, fn))
    return best


def load_project_dir(path, key):
    """Load one project folder in DSS's project-configuration layout."""
    p = Project(key)
    params_path = os.path.join(path, "params.json")
    p.set_params(read_json_file(params_path) if os.path.exists(params_path) else {})
    std = os.path.join(path, "variables.json")
    loc = os.path.join(path, "localvariables.json")
    p.variables = {"standard": read_json_file(std) if os.path.exists(std) else {},
                   "local": read_json_file(loc) if os.path.exists(loc) else {}}
    tags_path = os.path.join(path, "tags.json")
    if os.path.exists(tags_path):
        p.tags = read_json_file(tags_path)

    for name, fp in _json_files(os.path.join(path, "datasets")):
        p.add_dataset(name, read_json_file(fp))

    rdir = os.path.join(path, "recipes")
    for name, fp in _json_files(rdir):
        found = _payload_file(rdir, name)
        ext, payload = (found[0], read_text_file(found[1])) if found else (None, "")
        p.add_recipe(name, read_json_file(fp), payload, ext)

    sdir = os.path.join(path, "scenarios")
    for sid, fp in _json_files(sdir):
        script_path = os.path.join(sdir, sid + ".py")
        script = read_text_file(script_path) if os.path.exists(script_path) else None
        p.add_scenario(sid, read_json_file(fp), script)

    wdir = os.path.join(path, "wiki")
    tax = os.path.join(wdir, "taxonomy.json")
    if os.path.exists(tax):
        p.wiki = with_identity({"projectKey": key}, read_json_file(tax))
    adir = os.path.join(wdir, "articles")
    for aid, fp in _json_files(adir):
        md = os.path.join(adir, aid + ".md")
        p.add_article(aid, read_json_file(fp), read_text_file(md) if os.path.exists(md) else "")
    if p.articles and p.wiki is None:
        p.wiki = {"projectKey": key, "taxonomy": [{"id": a, "children": []} for a in p.articles]}

    for mid, fp in _json_files(os.path.join(path, "saved_models")):
        p.add_saved_model(mid, read_json_file(fp))
    for fid, fp in _json_files(os.path.join(path, "managed_folders")):
        p.add_managed_folder(fid, read_json_file(fp))
    return p


def load_fixture(path):
    """Load every project of a fixture folder (or the folder itself if it is one)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise SystemExit("dss_emulator: fixture folder not found: %s" % path)
    if os.path.exists(os.path.join(path, "params.json")):
        return [load_project_dir(path, os.path.basename(path))]
    projects = []
    for name in sorted(os.listdir(path)):
        sub = os.path.join(path, name)
        if os.path.isdir(sub) and os.path.exists(os.path.join(sub, "params.json")):
            projects.append(load_project_dir(sub, name))
    return projects


# ---------------------------------------------------------------------------------------
# Synthetic instance (--generate P,D)
# ---------------------------------------------------------------------------------------

_GEN_COLUMNS = (("id", "bigint"), ("customer_id", "bigint"), ("label", "string"),
                ("amount", "double"), ("created_at", "date"), ("country", "string"),
                ("quantity", "int"), ("active", "boolean"), ("score", "float"),
                ("category", "string"))
_GEN_STATUSES = ("Sandbox", "In use", "Production", "Archived")


def _gen_params(key, i):
    login = "admin"
    vt, ct = made_up_tags(login, key, "project")
    return {
        "projectType": "REGULAR",
        "owner": login,
        "permissions": [{"group": "data_team", "admin": False, "readProjectContent": True,
                         "writeProjectContent": i % 2 == 0, "readDashboards": True,
                         "writeDashboards": False, "runScenarios": True,
                         "exportDatasetsData": False}],
        "additionalDashboardUsers": {"users": []},
        "dashboardAuthorizations": {"allAuthorized": False, "authorizations": []},
        "exposedObjects": {"objects": []},
        "settings": {"codeEnvs": {"python": {"useBuiltinEnv": True, "preventOverride": False},
                                  "r": {"useBuiltinEnv": True, "preventOverride": False}},
                     "container": {"containerMode": "NONE"},
                     "cluster": {"clusterMode": "INHERIT"},
                     "k8sCluster": {"clusterMode": "INHERIT"},
                     "gitCommitMode": "AUTO"},
        "name": "Generated project %d" % i,
        "projectStatus": _GEN_STATUSES[i % len(_GEN_STATUSES)],
        "versionTag": vt,
        "creationTag": ct,
        "shortDesc": "Synthetic project %s made by dss_emulator --generate" % key,
        "description": "Synthetic project number %d." % i,
        "tags": ["generated", "batch%d" % (i % 5)],
        "customFields": {},
        "checklists": {"checklists": []},
    }


def _gen_dataset(key, j):
    cols = [{"name": n, "type": t} for n, t in _GEN_COLUMNS[: 3 + (j * 7) % 8]]
    kind = j % 4
    common = {"managed": kind != 1, "checklists": {"checklists": []}, "checks": [],
              "customMeta": {"kv": {}},
              "flowOptions": {"virtualizable": False, "rebuildBehavior": "NORMAL",
                              "crossProjectBuildBehavior": "DEFAULT"}}
    if kind == 1:
        d = {"type": "PostgreSQL"}
        d.update(common)
        d["params"] = {"connection": "pg_warehouse", "mode": "table", "schema": "public",
                       "table": "%s_ds_%03d" % (key.lower(), j), "notReadyIfEmpty": False}
    elif kind == 2:
        d = {"type": "S3", "formatType": "parquet"}
        d.update(common)
        d["formatParams"] = {"parquetLowerCaseIdentifiers": False,
                             "representsNullFields": False, "parquetCompressionMethod": "SNAPPY"}
        d["params"] = {"connection": "s3_lake", "bucket": "lake",
                       "path": "/%s/ds_%03d" % (key, j), "notReadyIfEmpty": False,
                       "filesSelectionRules": {"mode": "ALL", "includeRules": [],
                                               "excludeRules": [], "explicitFiles": []}}
    else:
        d = {"type": "Filesystem", "formatType": "csv"}
        d.update(common)
        d["formatParams"] = {"style": "excel", "charset": "utf8", "separator": ",",
                             "quoteChar": "\"", "escapeChar": "\\", "parseHeaderRow": True,
                             "compress": ""}
        d["params"] = {"connection": "filesystem_managed", "path": "/%s/ds_%03d" % (key, j),
                       "notReadyIfEmpty": False,
                       "filesSelectionRules": {"mode": "ALL", "includeRules": [],
                                               "excludeRules": [], "explicitFiles": []}}
    dims = []
    if kind == 3:
        dims = [{"name": "day", "type": "time", "params": {"period": "DAY"}}]
        d["params"]["path"] += "/%Y-%M-%D"
    d["partitioning"] = {"ignoreNonMatchingFile": False,
                         "considerMissingRequestedPartitionsAsEmpty": False, "dimensions": dims}
    if dims:
        d["partitioning"]["filePathPattern"] = "%Y-%M-%D/.*"
    d["schema"] = {"columns": cols, "userModified": False}
    d["tags"] = ["generated"] if j % 3 == 0 else []
    d["description"] = "Generated dataset %d" % j
    return d


def _gen_recipe(key, j, n_datasets):
    """Recipe j writes ds_j from ds_{j-1} (two inputs for joins)."""
    out_name = "ds_%03d" % j
    in_name = "ds_%03d" % ((j - 1) % n_datasets)
    rtype = ("python", "sql_query", "shaker", "join")[j % 4]
    inputs = {"main": {"items": [{"ref": in_name, "deps": []}]}}
    if rtype == "join":
        inputs["main"]["items"].append({"ref": "ds_%03d" % ((j + 1) % n_datasets), "deps": []})
    body = {"type": rtype, "neverRecomputeExistingPartitions": False,
            "optionalDependencies": False,
            "params": {"envSelection": {"envMode": "INHERIT"}} if rtype == "python" else {},
            "customMeta": {"kv": {}}, "redispatchPartitioning": False,
            "maxRunningActivities": 0, "inputs": inputs,
            "outputs": {"main": {"items": [{"ref": out_name, "appendMode": False}]}},
            "tags": [], "customFields": {}, "checklists": {"checklists": []}}
    if rtype == "python":
        payload = ("import dataiku\n\n"
                   "src = dataiku.Dataset(%r)\n"
                   "df = src.get_dataframe()\n"
                   "df = df.head(%d)\n"
                   "dataiku.Dataset(%r).write_with_schema(df)\n" % (in_name, 100 + j, out_name))
        ext = "py"
    elif rtype == "sql_query":
        payload = ("-- generated for %s\nSELECT *\nFROM \"%s_%s\"\nWHERE id %% %d = 0\n"
                   % (key, key.lower(), in_name, 2 + j % 5))
        ext = "sql"
    elif rtype == "shaker":
        payload = json.dumps({"columnsSelection": {"mode": "ALL"}, "explorationSampling": {},
                              "steps": [{"type": "ColumnRenamer", "metaType": "PROCESSOR",
                                         "preview": False, "disabled": False,
                                         "params": {"renamings": [{"from": "label",
                                                                   "to": "label_%d" % j}]}}],
                              "maxProcessedMemTableBytes": -1}, indent=2)
        ext = "shaker"
    else:
        payload = json.dumps({"joins": [{"table2": 1, "type": "LEFT",
                                         "on": [{"column1": {"table": 0, "name": "id"},
                                                 "column2": {"table": 1, "name": "id"},
                                                 "type": "EQ"}]}],
                              "selectedColumns": [], "engineParams": {}}, indent=2)
        ext = "join"
    return "compute_" + out_name, body, payload, ext


def generate_instance(n_projects, n_datasets):
    width = max(3, len(str(n_projects)))
    projects = []
    for i in range(1, n_projects + 1):
        key = "GEN%0*d" % (width, i)
        p = Project(key)
        p.set_params(_gen_params(key, i))
        p.variables = {"standard": {"env": "dev", "batch": i % 5, "source_prefix": key.lower()},
                       "local": {"debug": i % 2 == 0}}
        p.tags = {"tags": {"generated": {"color": "#3a85ad"}}}
        for j in range(n_datasets):
            p.add_dataset("ds_%03d" % j, _gen_dataset(key, j))
        for j in range(max(1, n_datasets // 2) if n_datasets else 0):
            name, body, payload, ext = _gen_recipe(key, j, n_datasets)
            p.add_recipe(name, body, payload, ext)
        p.add_scenario("BUILD_ALL", {
            "type": "step_based", "name": "Build all", "active": i % 2 == 1,
            "params": {"steps": [{"id": "build_0", "type": "build_flowitem", "name": "Build",
                                  "runConditionType": "RUN_IF_STATUS_MATCH",
                                  "runConditionStatuses": ["SUCCESS", "WARNING"],
                                  "params": {"builds": [{"type": "DATASET", "itemId": "ds_000",
                                                         "partitionsSpec": ""}],
                                             "jobType": "RECURSIVE_BUILD"}}]},
            "triggers": [{"id": "daily", "type": "temporal", "name": "Daily", "active": True,
                          "params": {"frequency": "Daily", "hour": 2, "minute": 0}}],
            "reporters": [], "tags": []})
        p.add_scenario("CHECK_DATA", {
            "type": "custom_python", "name": "Check data", "active": False,
            "params": {"envSelection": {"envMode": "INHERIT"}},
            "triggers": [], "reporters": [], "tags": ["quality"]},
            "from dataiku.scenario import Scenario\n\n"
            "s = Scenario()\n"
            "s.build_dataset(%r)\n" % "ds_000")
        projects.append(p)
    return projects


# ---------------------------------------------------------------------------------------
# Users and rights
# ---------------------------------------------------------------------------------------

class User:
    """An API key: its login and its rights per project key."""

    def __init__(self, key, login, admin=False, rules=None, default="none"):
        self.key = key
        self.login = login
        self.admin = admin
        self.rules = rules or {}
        self.default = LEVELS[default]

    def level(self, project_key):
        if self.admin:
            return LEVELS["admin"]
        return self.rules.get(project_key, self.default)


def parse_user_spec(spec):
    """``KEY:LOGIN:RULES`` with RULES = ``PROJ=level,*=level`` -> User."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ValueError("--user expects KEY:LOGIN:RULES, got %r" % spec)
    key, login, rules_text = parts
    rules, default = {}, "none"
    for item in filter(None, (r.strip() for r in rules_text.split(","))):
        proj, sep, level = item.partition("=")
        level = level.strip().lower()
        if not sep or level not in LEVELS:
            raise ValueError("bad rule %r in --user (want PROJECTKEY=none|read|write|admin)"
                             % item)
        if proj.strip() == "*":
            default = level
        else:
            rules[proj.strip()] = LEVELS[level]
    return User(key, login, rules=rules, default=default)


# ---------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------

class Request:
    """What a route handler gets."""

    __slots__ = ("method", "params", "query", "body", "user")

    def __init__(self, method, params, query, body, user):
        self.method = method
        self.params = params
        self.query = query
        self.body = body
        self.user = user

    def arg(self, name, default=None):
        values = self.query.get(name)
        return values[-1] if values else default

    def bool_arg(self, name, default=False):
        value = self.arg(name)
        return default if value is None else parse_bool(value, name)

    def int_arg(self, name, default):
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise bad_request("Invalid integer for parameter %s: %s" % (name, value))

    def json(self):
        """The body as a JSON object (any Content-Type), else 400."""
        if not self.body.strip():
            raise bad_request("Request body is empty, expected a JSON object")
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request("Request body is not valid JSON: %s" % e)
        if not isinstance(value, dict):
            raise bad_request("Request body must be a JSON object, got %s"
                              % type(value).__name__)
        return value


class Route:
    __slots__ = ("method", "parts", "access", "handler_name")

    def __init__(self, method, pattern, access, handler_name):
        self.method = method
        self.parts = tuple(pattern.split("/"))
        self.access = access
        self.handler_name = handler_name

    def bind(self, segs):
        params = {}
        for part, seg in zip(self.parts, segs):
            if part.startswith("{"):
                params[part[1:-1]] = seg
            elif part != seg:
                return None
        return params


class Router:
    def __init__(self, table):
        self.by_length = {}
        for method, pattern, access, handler in table:
            route = Route(method, pattern, access, handler)
            self.by_length.setdefault(len(route.parts), []).append(route)

    def match(self, method, segs):
        allowed = []
        for route in self.by_length.get(len(segs), ()):
            params = route.bind(segs)
            if params is None:
                continue
            if route.method == method:
                return route, params
            allowed.append(route.method)
        where = "/" + "/".join(segs)
        if allowed:
            raise ApiError(405, ERR_METHOD, "Request method '%s' not supported on %s (allowed: %s)"
                           % (method, where, ", ".join(sorted(set(allowed)))))
        raise ApiError(404, ERR_NOT_FOUND, "No API endpoint at %s" % where)


# (method, path after the API prefix, access, handler). Access "instance" = any valid
# key; "read"/"write"/"admin" = that level on project {K}.
ROUTES = (
    ("GET", "instance-info", "instance", "get_instance_info"),
    ("GET", "projects", "instance", "list_projects"),
    ("GET", "projects/{K}", "read", "get_project_summary"),
    ("GET", "projects/{K}/metadata", "read", "get_project_metadata"),
    ("PUT", "projects/{K}/metadata", "write", "put_project_metadata"),
    ("GET", "projects/{K}/settings", "read", "get_project_settings"),
    ("PUT", "projects/{K}/settings", "write", "put_project_settings"),
    ("GET", "projects/{K}/permissions", "admin", "get_project_permissions"),
    ("PUT", "projects/{K}/permissions", "admin", "put_project_permissions"),
    ("GET", "projects/{K}/variables", "read", "get_variables"),
    ("PUT", "projects/{K}/variables", "write", "put_variables"),
    ("GET", "projects/{K}/variables-resolved", "read", "get_resolved_variables"),
    ("GET", "projects/{K}/tags", "read", "get_project_tags"),
    ("PUT", "projects/{K}/tags", "write", "put_project_tags"),
    ("POST", "projects/{K}/export", "read", "export_project"),

    ("GET", "projects/{K}/datasets", "read", "list_datasets"),
    ("POST", "projects/{K}/datasets", "write", "create_dataset"),
    ("GET", "projects/{K}/datasets/{N}", "read", "get_dataset"),
    ("PUT", "projects/{K}/datasets/{N}", "write", "put_dataset"),
    ("GET", "projects/{K}/datasets/{N}/schema", "read", "get_dataset_schema"),
    ("PUT", "projects/{K}/datasets/{N}/schema", "write", "put_dataset_schema"),
    ("GET", "projects/{K}/datasets/{N}/metadata", "read", "get_dataset_metadata"),
    ("PUT", "projects/{K}/datasets/{N}/metadata", "write", "put_dataset_metadata"),
    ("GET", "projects/{K}/datasets/{N}/partitions", "read", "list_partitions"),
    ("GET", "projects/{K}/datasets/{N}/metrics/last/{P}", "read", "get_last_metrics"),

    ("GET", "projects/{K}/recipes", "read", "list_recipes"),
    ("GET", "projects/{K}/recipes/{R}", "read", "get_recipe"),
    ("PUT", "projects/{K}/recipes/{R}", "write", "put_recipe"),
    ("GET", "projects/{K}/recipes/{R}/metadata", "read", "get_recipe_metadata"),
    ("PUT", "projects/{K}/recipes/{R}/metadata", "write", "put_recipe_metadata"),

    ("GET", "projects/{K}/scenarios", "read", "list_scenarios"),
    ("GET", "projects/{K}/scenarios/{S}", "read", "get_scenario"),
    ("PUT", "projects/{K}/scenarios/{S}", "write", "put_scenario"),
    ("GET", "projects/{K}/scenarios/{S}/payload", "read", "get_scenario_payload"),
    ("PUT", "projects/{K}/scenarios/{S}/payload", "write", "put_scenario_payload"),
    ("GET", "projects/{K}/scenarios/{S}/light", "read", "get_scenario_light"),
    ("GET", "projects/{K}/scenarios/{S}/get-last-runs", "read", "get_last_runs"),

    ("GET", "projects/{K}/wiki", "read", "get_wiki"),
    ("PUT", "projects/{K}/wiki", "write", "put_wiki"),
    ("GET", "projects/{K}/wiki/{A}", "read", "get_article"),
    ("PUT", "projects/{K}/wiki/{A}", "write", "put_article"),

    ("GET", "projects/{K}/savedmodels", "read", "list_saved_models"),
    ("GET", "projects/{K}/savedmodels/{M}", "read", "get_saved_model"),
    ("PUT", "projects/{K}/savedmodels/{M}", "write", "put_saved_model"),

    ("GET", "projects/{K}/managedfolders", "read", "list_managed_folders"),
    ("GET", "projects/{K}/managedfolders/{F}", "read", "get_managed_folder"),
    ("GET", "projects/{K}/managedfolders/{F}/contents", "read", "get_managed_folder_contents"),
    ("GET", "projects/{K}/jupyter-notebooks", "read", "list_empty"),
    ("GET", "projects/{K}/webapps", "read", "list_empty"),
    ("GET", "projects/{K}/libraries/contents", "read", "list_empty"),
)


# ---------------------------------------------------------------------------------------
# The API itself: state + handlers (all called with State.lock held)
# ---------------------------------------------------------------------------------------

class State:
    """The emulated instance. Every handler runs with ``self.lock`` held."""

    def __init__(self, projects, node_type="DESIGN"):
        self.lock = threading.RLock()
        self.projects = {}
        for p in projects:
            if p.key in self.projects:
                raise SystemExit("dss_emulator: project %s loaded twice" % p.key)
            self.projects[p.key] = p
        self.node_type = node_type
        self._last_ms = 0

    # --- helpers ------------------------------------------------------------------------

    def now_ms(self):
        """Wall-clock ms, strictly increasing across calls."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def bumped(self, old_tag, login):
        old = old_tag.get("versionNumber", 0) if isinstance(old_tag, dict) else 0
        number = old + 1 if isinstance(old, int) else 1
        return make_tag(number, login, self.now_ms())

    def bump(self, obj, login):
        obj["versionTag"] = self.bumped(obj.get("versionTag"), login)

    def project(self, req):
        try:
            return self.projects[req.params["K"]]
        except KeyError:
            raise not_found("project", req.params["K"])

    @staticmethod
    def lookup(table, kind, p, name):
        try:
            return table[name]
        except KeyError:
            raise not_found(kind, p.key, name)

    def replace(self, old, body, ident, login):
        """New stored object from a PUT body: identity checked, tags renewed."""
        for k, v in ident.items():
            if k in body and body[k] != v:
                raise bad_request("%s mismatch: body has %r but the URL says %r"
                                  % (k, body[k], v))
        tags = (self.bumped(old.get("versionTag"), login), old.get("creationTag"))
        return with_identity(ident, body, tags)

    @staticmethod
    def msg(text):
        return {"msg": text}

    # --- instance -------------------------------------------------------------------------

    def get_instance_info(self, req):
        return {"nodeId": "dssfs-emulator", "nodeName": "dssfs emulator",
                "nodeType": self.node_type}

    def list_projects(self, req):
        return [p.summary() for k, p in self.projects.items()
                if req.user.level(k) >= LEVELS["read"]]

    # --- project --------------------------------------------------------------------------

    def get_project_summary(self, req):
        return self.project(req).summary()

    def get_project_metadata(self, req):
        return self.project(req).metadata

    def put_project_metadata(self, req):
        p = self.project(req)
        body = req.json()
        check_metadata(body)
        p.metadata = body
        self.bump(p.settings, req.user.login)
        return self.msg("Metadata of project %s saved" % p.key)

    def get_project_settings(self, req):
        return self.project(req).settings

    def put_project_settings(self, req):
        p = self.project(req)
        body = req.json()
        tags = (self.bumped(p.settings.get("versionTag"), req.user.login),
                p.settings.get("creationTag"))
        p.settings = with_identity({}, body, tags)
        return self.msg("Settings of project %s saved" % p.key)

    def get_project_permissions(self, req):
        return self.project(req).permissions

    def put_project_permissions(self, req):
        p = self.project(req)
        body = req.json()
        if "permissions" in body and not isinstance(body["permissions"], list):
            raise bad_request("permissions must be a list")
        p.permissions = body
        self.bump(p.settings, req.user.login)
        return self.msg("Permissions of project %s saved" % p.key)

    def get_variables(self, req):
        return self.project(req).variables

    def put_variables(self, req):
        p = self.project(req)
        body = req.json()
        for part in ("standard", "local"):
            if not isinstance(body.get(part), dict):
                raise bad_request("Variables must contain both 'standard' and 'local' objects")
        p.variables = body
        self.bump(p.settings, req.user.login)
        return self.msg("Variables of project %s saved" % p.key)

    def get_resolved_variables(self, req):
        v = self.project(req).variables
        out = dict(v.get("standard", {}))
        out.update(v.get("local", {}))
        return out

    def get_project_tags(self, req):
        return self.project(req).tags

    def put_project_tags(self, req):
        p = self.project(req)
        p.tags = req.json()
        self.bump(p.settings, req.user.login)
        return self.msg("Tags of project %s saved" % p.key)

    def export_project(self, req):
        p = self.project(req)
        return RawResponse(export_zip(p), "application/zip",
                           [("Content-Disposition", 'attachment; filename="%s.zip"' % p.key)])

    # --- datasets -------------------------------------------------------------------------

    def dataset(self, req):
        p = self.project(req)
        return p, self.lookup(p.datasets, "dataset", p, req.params["N"])

    def list_datasets(self, req):
        req.bool_arg("foreign")  # accepted (validated), nothing is shared here
        return list(self.project(req).datasets.values())

    def get_dataset(self, req):
        return self.dataset(req)[1]

    def create_dataset(self, req):
        """POST projects/{K}/datasets/ (the client's create_dataset): any name DSS
        would store, including ones that are not valid file names."""
        p = self.project(req)
        body = req.json()
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("A dataset needs a non-empty 'name'")
        if name in p.datasets:
            raise bad_request("Dataset %s.%s already exists" % (p.key, name))
        body.setdefault("type", "Filesystem")
        body.setdefault("params", {})
        body.setdefault("schema", {"columns": [], "userModified": False})
        tag = self.bumped(None, req.user.login)
        created = make_tag(0, req.user.login, tag["lastModifiedOn"])
        p.datasets[name] = with_identity({"projectKey": p.key, "name": name},
                                         without(body, "versionTag", "creationTag"),
                                         (tag, created))
        return self.msg("Dataset %s.%s created" % (p.key, name))

    def put_dataset(self, req):
        p, old = self.dataset(req)
        name = req.params["N"]
        p.datasets[name] = self.replace(old, req.json(), {"projectKey": p.key, "name": name},
                                        req.user.login)
        return self.msg("Dataset %s.%s saved" % (p.key, name))

    def get_dataset_schema(self, req):
        schema = self.dataset(req)[1].get("schema")
        return schema if isinstance(schema, dict) else {"columns": [], "userModified": False}

    def put_dataset_schema(self, req):
        p, ds = self.dataset(req)
        body = req.json()
        cols = body.get("columns")
        if not isinstance(cols, list) or not all(
                isinstance(c, dict) and isinstance(c.get("name"), str) for c in cols):
            raise bad_request("A schema needs 'columns': a list of objects with a 'name'")
        ds["schema"] = body
        self.bump(ds, req.user.login)
        return self.msg("Schema of dataset %s.%s saved" % (p.key, ds["name"]))

    def get_dataset_metadata(self, req):
        return object_metadata(self.dataset(req)[1], label=req.params["N"])

    def put_dataset_metadata(self, req):
        p, ds = self.dataset(req)
        set_object_metadata(ds, req.json())
        self.bump(ds, req.user.login)
        return self.msg("Metadata of dataset %s.%s saved" % (p.key, ds["name"]))

    def list_partitions(self, req):
        p, ds = self.dataset(req)
        return dataset_partitions(p.key, ds)

    def get_last_metrics(self, req):
        p, ds = self.dataset(req)
        return last_metrics(p.key, ds, req.params["P"])

    # --- recipes --------------------------------------------------------------------------

    def recipe(self, req):
        p = self.project(req)
        return p, self.lookup(p.recipes, "recipe", p, req.params["R"])

    def list_recipes(self, req):
        out = []
        for r in self.project(req).recipes.values():
            item = {k: r[k] for k in ("projectKey", "name", "type") if k in r}
            item["tags"] = r.get("tags", [])
            item["versionTag"] = r.get("versionTag")
            item["creationTag"] = r.get("creationTag")
            out.append(item)
        return out

    def get_recipe(self, req):
        p, r = self.recipe(req)
        return {"recipe": r, "payload": p.payloads.get(r["name"], "")}

    def put_recipe(self, req):
        p, old = self.recipe(req)
        name = req.params["R"]
        body = req.json()
        recipe = body.get("recipe")
        if not isinstance(recipe, dict):
            raise bad_request("Recipe update needs a 'recipe' object (and a 'payload' string)")
        payload = body.get("payload")
        if payload is None:
            payload = ""
        if not isinstance(payload, str):
            raise bad_request("Recipe 'payload' must be a string")
        p.recipes[name] = self.replace(old, recipe, {"projectKey": p.key, "name": name},
                                       req.user.login)
        p.payloads[name] = payload
        return self.msg("Recipe %s.%s saved" % (p.key, name))

    def get_recipe_metadata(self, req):
        return object_metadata(self.recipe(req)[1])

    def put_recipe_metadata(self, req):
        p, r = self.recipe(req)
        set_object_metadata(r, req.json())
        self.bump(r, req.user.login)
        return self.msg("Metadata of recipe %s.%s saved" % (p.key, r["name"]))

    # --- scenarios ------------------------------------------------------------------------

    def scenario(self, req):
        p = self.project(req)
        return p, self.lookup(p.scenarios, "scenario", p, req.params["S"])

    def list_scenarios(self, req):
        out = []
        for s in self.project(req).scenarios.values():
            out.append({"id": s["id"], "projectKey": s["projectKey"],
                        "name": s.get("name", s["id"]), "type": s.get("type"),
                        "active": s.get("active", False), "running": False,
                        "tags": s.get("tags", []), "versionTag": s.get("versionTag"),
                        "creationTag": s.get("creationTag")})
        return out

    def get_scenario(self, req):
        return self.scenario(req)[1]

    def put_scenario(self, req):
        p, old = self.scenario(req)
        sid = req.params["S"]
        new = self.replace(old, req.json(), {"projectKey": p.key, "id": sid}, req.user.login)
        p.scenarios[sid] = new
        if new.get("type") == "custom_python":
            p.scripts.setdefault(sid, "")
        return self.msg("Scenario %s.%s saved" % (p.key, sid))

    def get_scenario_payload(self, req):
        p, s = self.scenario(req)
        return {"script": p.scripts.get(s["id"], "")}

    def put_scenario_payload(self, req):
        p, s = self.scenario(req)
        body = req.json()
        if not isinstance(body.get("script"), str):
            raise bad_request("Scenario payload needs a 'script' string")
        p.scripts[s["id"]] = body["script"]
        self.bump(s, req.user.login)
        return self.msg("Payload of scenario %s.%s saved" % (p.key, s["id"]))

    def get_scenario_light(self, req):
        p, s = self.scenario(req)
        out = {k: s[k] for k in ("projectKey", "id", "name", "type", "active") if k in s}
        out.update({"running": False, "nextRun": 0, "tags": s.get("tags", []),
                    "versionTag": s.get("versionTag")})
        return out

    def get_last_runs(self, req):
        p, s = self.scenario(req)
        limit = req.int_arg("limit", 10)
        req.bool_arg("onlyFinishedRuns")
        return scenario_runs(p.key, s, limit)

    # --- wiki -----------------------------------------------------------------------------

    def get_wiki(self, req):
        p = self.project(req)
        return p.wiki if p.wiki is not None else {"projectKey": p.key, "taxonomy": []}

    def put_wiki(self, req):
        p = self.project(req)
        body = req.json()
        if "taxonomy" in body and not isinstance(body["taxonomy"], list):
            raise bad_request("Wiki 'taxonomy' must be a list")
        p.wiki = with_identity({"projectKey": p.key}, body)
        return p.wiki

    def article_id(self, p, id_or_name):
        if id_or_name in p.articles:
            return id_or_name
        for aid, art in p.articles.items():
            if art.get("name") == id_or_name:
                return aid
        raise not_found("article", p.key, id_or_name)

    def get_article(self, req):
        p = self.project(req)
        aid = self.article_id(p, req.params["A"])
        return {"article": p.articles[aid], "payload": p.article_payloads.get(aid, "")}

    def put_article(self, req):
        p = self.project(req)
        aid = self.article_id(p, req.params["A"])
        body = req.json()
        article = body.get("article")
        if not isinstance(article, dict) or not isinstance(body.get("payload", ""), str):
            raise bad_request("Article update needs an 'article' object and a 'payload' string")
        p.articles[aid] = self.replace(p.articles[aid], article,
                                       {"projectKey": p.key, "id": aid}, req.user.login)
        p.article_payloads[aid] = body.get("payload") or ""
        return {"article": p.articles[aid], "payload": p.article_payloads[aid]}

    # --- saved models, managed folders, empty lists ---------------------------------------

    def list_saved_models(self, req):
        return [{k: m[k] for k in ("id", "projectKey", "name", "type", "contentType") if k in m}
                for m in self.project(req).saved_models.values()]

    def get_saved_model(self, req):
        p = self.project(req)
        return self.lookup(p.saved_models, "saved model", p, req.params["M"])

    def put_saved_model(self, req):
        p = self.project(req)
        mid = req.params["M"]
        old = self.lookup(p.saved_models, "saved model", p, mid)
        p.saved_models[mid] = self.replace(old, req.json(), {"projectKey": p.key, "id": mid},
                                           req.user.login)
        return self.msg("Saved model %s.%s saved" % (p.key, mid))

    def list_managed_folders(self, req):
        return list(self.project(req).managed_folders.values())

    def get_managed_folder(self, req):
        p = self.project(req)
        return self.lookup(p.managed_folders, "managed folder", p, req.params["F"])

    def get_managed_folder_contents(self, req):
        self.get_managed_folder(req)
        return {"items": []}

    def list_empty(self, req):
        self.project(req)
        return []


# --- derived views ------------------------------------------------------------------------

def check_metadata(md):
    """Reject metadata bodies DSS could not deserialize (wrong field types)."""
    types = {"label": str, "description": str, "shortDesc": str, "tags": list,
             "checklists": dict, "custom": dict, "customFields": dict}
    for k, t in types.items():
        if k in md and md[k] is not None and not isinstance(md[k], t):
            raise bad_request("Metadata field '%s' must be a %s" % (k, t.__name__))
    if isinstance(md.get("tags"), list) and not all(isinstance(t, str) for t in md["tags"]):
        raise bad_request("Metadata 'tags' must be a list of strings")


def object_metadata(obj, label=None):
    """The /metadata view of a dataset or recipe definition."""
    md = {} if label is None else {"label": label}
    for mkey, okey, _type, default in OBJECT_METADATA_FIELDS:
        if okey in obj:
            md[mkey] = obj[okey]
        elif default is not None:
            md[mkey] = default()
    return md


def set_object_metadata(obj, md):
    """Write a /metadata body back into the definition (a whole replacement)."""
    check_metadata(md)
    for mkey, okey, _type, default in OBJECT_METADATA_FIELDS:
        if mkey in md and md[mkey] is not None:
            obj[okey] = md[mkey]
        elif default is None:
            obj.pop(okey, None)
        else:
            obj[okey] = default()


_PERIOD_FORMATS = {"YEAR": ("%Y", 365), "MONTH": ("%Y-%m", 31), "DAY": ("%Y-%m-%d", 1),
                   "HOUR": ("%Y-%m-%d-%H", 1 / 24)}


def _dimension_values(project_key, name, dim):
    """A deterministic short list of partition values for one dimension."""
    h = stable_hash(project_key, name, dim.get("name", ""))
    count = 3 + h % 3
    if dim.get("type") == "time":
        period = (dim.get("params") or {}).get("period", "DAY")
        fmt, step_days = _PERIOD_FORMATS.get(period, _PERIOD_FORMATS["DAY"])
        start = T_2020 + 3 * 365 * MS_DAY + (h >> 16) % (365 * MS_DAY)  # in 2023
        values = []
        for i in range(count):
            t = time.gmtime((start + int(i * step_days * MS_DAY)) / 1000)
            values.append(time.strftime(fmt, t))
        return sorted(set(values))
    return ["%s_%d" % (dim.get("name", "v"), i + 1) for i in range(count)]


def dataset_partitions(project_key, ds):
    """Partition ids: ["NP"] if not partitioned, else the dimensions' product joined by |."""
    dims = (ds.get("partitioning") or {}).get("dimensions") or []
    if not dims:
        return ["NP"]
    ids = [""]
    for dim in dims:
        values = _dimension_values(project_key, ds["name"], dim)
        ids = [(a + "|" + v) if a else v for a in ids for v in values]
    return ids[:50]


def last_metrics(project_key, ds, partition):
    """{metrics: [{metric, lastValues}]} with deterministic values."""
    name = ds["name"]
    known = partition in ("NP", "ALL") or partition in dataset_partitions(project_key, ds)
    columns = ((ds.get("schema") or {}).get("columns")) or []
    h = stable_hash(project_key, name, "metrics", partition)
    when = T_2020 + 4 * 365 * MS_DAY + stable_hash(project_key, name, "when") % (300 * MS_DAY)
    records = 100 + h % 999_900
    values = (("basic", "COUNT_COLUMNS", len(columns)),
              ("records", "COUNT_RECORDS", records),
              ("basic", "SIZE", records * (20 + 8 * len(columns))))
    out = []
    for probe, metric, value in values:
        out.append({
            "metric": {"metricType": metric, "type": probe, "id": "%s:%s" % (probe, metric),
                       "dataType": "BIGINT"},
            "lastValues": [{"partition": partition, "value": str(value), "dataType": "BIGINT",
                            "time": when}] if known else []})
    return {"metrics": out}


def scenario_runs(project_key, s, limit):
    """A deterministic history of finished runs, newest first."""
    sid = s["id"]
    h = stable_hash(project_key, sid, "runs")
    total = 3 + h % 8
    newest = T_2020 + 4 * 365 * MS_DAY + (h >> 8) % (300 * MS_DAY)
    triggers = s.get("triggers") or []
    trig = triggers[0] if triggers and isinstance(triggers[0], dict) else {}
    trigger = {"id": trig.get("id", "manual"), "type": trig.get("type", "manual"),
               "name": trig.get("name", "Manual trigger")}
    runs = []
    for i in range(max(0, min(limit, total))):
        hi = stable_hash(project_key, sid, "run", i)
        start = newest - i * MS_DAY + hi % 1000
        end = start + 5_000 + hi % 600_000
        outcome = "FAILED" if hi % 7 == 0 else "WARNING" if hi % 11 == 0 else "SUCCESS"
        run_id = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(start // 1000))
        run_id += "-%03d" % (start % 1000)
        runs.append({"runId": run_id,
                     "scenario": {"projectKey": project_key, "id": sid,
                                  "name": s.get("name", sid)},
                     "trigger": {"trigger": trigger},
                     "start": start, "end": end,
                     "result": {"outcome": outcome, "type": "SCENARIO_DONE",
                                "start": start, "end": end}})
    return runs


def export_zip(p):
    """The project's configuration as DSS lays it out, in a byte-stable zip."""
    files = {}

    def put_json(path, obj):
        files[path] = json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")

    def safe(name):
        return name.replace("/", "%2F")

    put_json("params.json", p.params())
    put_json("variables.json", p.variables.get("standard", {}))
    put_json("localvariables.json", p.variables.get("local", {}))
    put_json("tags.json", p.tags)
    for name, ds in p.datasets.items():
        put_json("datasets/%s.json" % safe(name), without(ds, "projectKey", "name"))
    for name, r in p.recipes.items():
        put_json("recipes/%s.json" % safe(name), without(r, "projectKey", "name"))
        payload = p.payloads.get(name, "")
        ext = p.payload_ext.get(name) or (r.get("type") if payload else None)
        if ext:
            files["recipes/%s.%s" % (safe(name), ext)] = payload.encode("utf-8")
    for sid, s in p.scenarios.items():
        put_json("scenarios/%s.json" % safe(sid), without(s, "projectKey", "id"))
        if sid in p.scripts:
            files["scenarios/%s.py" % safe(sid)] = p.scripts[sid].encode("utf-8")
    if p.wiki is not None:
        put_json("wiki/taxonomy.json", without(p.wiki, "projectKey"))
    for aid, a in p.articles.items():
        put_json("wiki/articles/%s.json" % safe(aid), without(a, "projectKey", "id"))
        files["wiki/articles/%s.md" % safe(aid)] = p.article_payloads.get(aid, "").encode("utf-8")
    for mid, m in p.saved_models.items():
        put_json("saved_models/%s.json" % safe(mid), without(m, "projectKey", "id"))
    for fid, f in p.managed_folders.items():
        put_json("managed_folders/%s.json" % safe(fid), without(f, "projectKey", "id"))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            info = zipfile.ZipInfo("project_config/" + path, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[path])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Faults, stats, request log
# ---------------------------------------------------------------------------------------

def default_error_type(status):
    return {400: ERR_ILLEGAL_ARGUMENT, 401: ERR_UNAUTHORIZED, 403: ERR_FORBIDDEN,
            404: ERR_NOT_FOUND}.get(status, ERR_CODED)


# Kinds of injected faults (rule "fault" field, --fault-rate, /__emulator__/fault-rates).
FAULT_KINDS = ("500", "503", "reset", "stall", "truncate", "badjson", "drip", "garbage")

# How the kinds behave; a rule or the rate configuration may override each.
FAULT_OPTION_DEFAULTS = {
    "retry_after": 1,          # 503: the Retry-After header (seconds)
    "stall_s": 60.0,           # stall: hold the request this long, then close unanswered
    "drip_bytes": 8,           # drip: send the body this many bytes at a time ...
    "drip_interval_ms": 10.0,  # ... every this many ms
    "garbage_text": "xyz",     # garbage: appended after the real body
}


def fault_kind(value):
    """A fault kind from JSON or the command line (500 and "500" are the same)."""
    kind = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if kind not in FAULT_KINDS:
        raise bad_request("Unknown fault kind %r (one of %s)" % (value, ", ".join(FAULT_KINDS)))
    return kind


def fault_options(spec, base=None):
    """FAULT_OPTION_DEFAULTS (or ``base``) overridden by the option keys of ``spec``."""
    out = dict(base or FAULT_OPTION_DEFAULTS)
    for name in FAULT_OPTION_DEFAULTS:
        if name not in spec:
            continue
        value = spec[name]
        if name == "garbage_text":
            if not isinstance(value, str) or not value:
                raise bad_request("Fault garbage_text must be a non-empty string")
        elif (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0
              or (name in ("retry_after", "drip_bytes") and value != int(value))
              or (name == "drip_bytes" and value < 1)):
            raise bad_request("Fault %s must be a non-negative number (%s)" % (
                name, "a positive integer" if name == "drip_bytes" else "got %r" % (value,)))
        out[name] = int(value) if name in ("retry_after", "drip_bytes") else value
    return out


class FaultRule:
    def __init__(self, rule_id, spec):
        if not isinstance(spec, dict):
            raise bad_request("A fault is a JSON object")
        self.id = rule_id
        self.spec = spec
        self.kind = fault_kind(spec["fault"]) if spec.get("fault") is not None else None
        self.options = fault_options(spec)
        method = spec.get("method")
        self.method = method.upper() if isinstance(method, str) and method else None
        try:
            self.regex = re.compile(spec.get("path_regex") or "")
        except re.error as e:
            raise bad_request("Bad path_regex: %s" % e)
        self.status = spec.get("status")
        self.raw_body = spec.get("raw_body")
        self.drop = bool(spec.get("drop", False))
        self.delay_ms = spec.get("delay_ms") or 0
        self.count = spec.get("count")
        for name, value in (("status", self.status), ("delay_ms", self.delay_ms),
                            ("count", self.count)):
            if value is not None and (not isinstance(value, (int, float))
                                      or isinstance(value, bool) or value < 0):
                raise bad_request("Fault %s must be a non-negative number" % name)
        if self.raw_body is not None and not isinstance(self.raw_body, str):
            raise bad_request("Fault raw_body must be a string")
        # A rule with only delay_ms delays, then the request is answered normally.
        self.answers = (self.drop or self.kind is not None or self.status is not None
                        or self.raw_body is not None or "errorType" in spec
                        or "message" in spec)

    def matches(self, method, path):
        return (self.method is None or self.method == method) and self.regex.search(path)

    def response(self):
        status = int(self.status) if self.status is not None else (
            502 if self.raw_body is not None else 500)
        if self.raw_body is not None:
            ctype = "text/html" if self.raw_body.lstrip().startswith("<") else "text/plain"
            return status, self.raw_body.encode("utf-8"), ctype + "; charset=utf-8"
        message = self.spec.get("message") or "Injected fault (HTTP %d)" % status
        body = {"errorType": self.spec.get("errorType") or default_error_type(status),
                "message": message, "detailedMessage": message}
        return status, json_bytes(body), "application/json"

    def describe(self):
        out = dict(self.spec)
        out["id"] = self.id
        out["remaining"] = self.count
        return out


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.next_id = 1

    def add(self, spec):
        with self.lock:
            rule = FaultRule(self.next_id, spec)
            self.next_id += 1
            self.rules.append(rule)
            return rule.id

    def clear(self):
        with self.lock:
            self.rules = []

    def list(self):
        with self.lock:
            return [r.describe() for r in self.rules]

    def match(self, method, path):
        """First rule matching, with its count consumed; exhausted rules are dropped."""
        if not self.rules:
            return None
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count <= 0:
                            self.rules.remove(rule)
                    return rule
        return None


class FaultRates:
    """Random faults: each eligible DSS API request draws at most one fault kind.

    ``rates`` maps kinds to probabilities (sum <= 1); one draw of a seeded generator
    per eligible request, so a sequential client sees the same faults on every run.
    Eligible: the method is in ``methods`` (all if None) and the path (after prefix
    removal, as for path_regex) starts with ``path_prefix``.
    """

    def __init__(self, seed=0):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.seed = seed
        self.rates = {}
        self.methods = None
        self.path_prefix = ""
        self.options = dict(FAULT_OPTION_DEFAULTS)

    def configure(self, spec):
        """Replaces the whole configuration with ``spec`` (400 if it is wrong)."""
        if not isinstance(spec, dict):
            raise bad_request("Fault rates are a JSON object")
        rates, methods, prefix = {}, None, ""
        for key, value in spec.items():
            if key in FAULT_OPTION_DEFAULTS:
                continue
            if key == "seed":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise bad_request("seed must be an integer")
            elif key == "methods":
                if isinstance(value, str):
                    value = value.split(",")
                if not isinstance(value, list) or not all(
                        isinstance(m, str) and m.strip() for m in value):
                    raise bad_request("methods must be a list of HTTP methods")
                methods = {m.strip().upper() for m in value}
            elif key == "path_prefix":
                if not isinstance(value, str):
                    raise bad_request("path_prefix must be a string")
                prefix = value
            else:
                kind = fault_kind(key)
                if (not isinstance(value, (int, float)) or isinstance(value, bool)
                        or not 0 <= value <= 1):
                    raise bad_request("The rate of %s must be between 0 and 1" % kind)
                if value:
                    rates[kind] = float(value)
        if sum(rates.values()) > 1 + 1e-9:
            raise bad_request("Fault rates add up to more than 1")
        options = fault_options(spec)
        with self.lock:
            if "seed" in spec:
                self.seed = spec["seed"]
                self.rng = random.Random(self.seed)
            self.rates, self.methods, self.path_prefix = rates, methods, prefix
            self.options = options

    def clear(self):
        self.configure({})

    def draw(self, method, path):
        """The kind of fault for this request, or None."""
        if not self.rates:
            return None
        with self.lock:
            if self.methods is not None and method not in self.methods:
                return None
            if not path.startswith(self.path_prefix):
                return None
            x = self.rng.random()
            for kind in FAULT_KINDS:
                rate = self.rates.get(kind, 0.0)
                if x < rate:
                    return kind
                x -= rate
        return None

    def describe(self):
        with self.lock:
            out = {k: self.rates[k] for k in FAULT_KINDS if k in self.rates}
            out["seed"] = self.seed
            out["methods"] = sorted(self.methods) if self.methods is not None else None
            out["path_prefix"] = self.path_prefix
            out.update(self.options)
            return out


class Recorder:
    """Counts answered DSS API requests and appends them to the request log."""

    def __init__(self, log_path=None):
        self.lock = threading.Lock()
        self.total = 0
        self.by_method = {}
        self.faults = {}            # fault kind (or "rule") -> how many were injected
        self.in_flight = 0
        self.max_in_flight = 0
        self.log = open(log_path, "ab", buffering=0) if log_path else None

    def begin(self):
        """A DSS API request arrived (for the concurrency figure)."""
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self):
        with self.lock:
            self.in_flight -= 1

    def record(self, method, raw_path):
        with self.lock:
            self.total += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1
            if self.log is not None:
                self.log.write(("%s %s\n" % (method, raw_path)).encode("latin-1", "replace"))

    def fault(self, kind):
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def stats(self):
        with self.lock:
            return {"requests": self.total, "by_method": dict(self.by_method),
                    "max_in_flight": self.max_in_flight, "faults": dict(self.faults)}

    def reset(self):
        with self.lock:
            self.total = 0
            self.by_method = {}
            self.faults = {}
            self.max_in_flight = self.in_flight

    def close(self):
        if self.log is not None:
            self.log.close()


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------

class Emulator:
    """Ties the state, keys, faults and stats to HTTP requests."""

    def __init__(self, state, users, latency_ms=0, log_path=None, dss_version="13.4.0",
                 rates=None):
        self.state = state
        self.users = users                   # key -> User
        self.latency = latency_ms / 1000.0
        self.recorder = Recorder(log_path)
        self.faults = Faults()
        self.rates = rates or FaultRates()
        self.dss_version = dss_version
        self.router = Router(ROUTES)
        self.api_server = None               # serves everything
        self.control_server = None           # --control-port: /__emulator__ only
        self.stopping = threading.Event()    # set by POST /__emulator__/shutdown
        self.wake = threading.Event()        # set (and replaced) by pause: ends stalls
        self.pause_lock = threading.Lock()   # one pause / resume at a time
        self.conns_lock = threading.Lock()   # guards paused and conns
        self.paused = False
        self.conns = set()                   # open connections of the API port

    # --- serving, pause and resume ---------------------------------------------------------

    def serve(self, server):
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()

    def close(self):
        for server in (self.api_server, self.control_server):
            if server is None:
                continue
            if not (server is self.api_server and self.paused):
                server.shutdown()
            server.server_close()
        self.recorder.close()

    def track(self, conn, server):
        """A new connection (Handler.setup); closed at once while paused."""
        if server is not self.api_server:
            return
        with self.conns_lock:
            if not self.paused:
                self.conns.add(conn)
                return
        close_socket(conn)

    def untrack(self, conn):
        with self.conns_lock:
            self.conns.discard(conn)

    def pause(self, keep=None):
        """Closes the API port's listening socket and its open connections (all but
        ``keep``): clients get ECONNREFUSED until resume() listens again."""
        with self.pause_lock:
            if self.control_server is None:
                raise ApiError(409, ERR_CODED, "pause needs the control port: start the "
                               "emulator with --control-port or --control-port-file")
            if self.paused:
                return
            with self.conns_lock:
                self.paused = True
                conns = [c for c in self.conns if c is not keep]
            self.api_server.shutdown()
            self.api_server.socket.close()
            wake, self.wake = self.wake, threading.Event()
            wake.set()
            for conn in conns:
                close_socket(conn)

    def resume(self):
        """Listens again on the same address and port."""
        with self.pause_lock:
            if not self.paused:
                return
            server = self.api_server
            sock = socket.socket(server.address_family, server.socket_type)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(server.server_address)
                sock.listen(server.request_queue_size)
            except OSError as e:
                sock.close()
                raise ApiError(500, ERR_INTERNAL, "cannot listen again on %s: %s"
                               % (server.server_address[:2], e))
            server.socket = sock
            with self.conns_lock:
                self.paused = False
            self.serve(server)

    # --- entry point ----------------------------------------------------------------------

    def handle(self, h, method):
        raw = h.path
        target = raw
        if target.startswith(("http://", "https://")):   # absolute-form request target
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path_part, _, query = target.partition("?")
        path_part = path_part.partition("#")[0]
        segs = [decode_segment(s) for s in path_part.split("/") if s]
        try:
            body = self.read_body(h)
        except ValueError as e:
            h.close_connection = True
            h.send_bytes(400, json_bytes(bad_request(str(e)).body()), "application/json",
                         self.dss_version)
            return
        if segs and segs[0] == CONTROL_PREFIX:
            self.control(h, method, segs[1:], body)
        elif h.server is self.control_server:
            err = ApiError(404, ERR_NOT_FOUND, "The control port only serves /%s/"
                           % CONTROL_PREFIX)
            h.send_bytes(404, json_bytes(err.body()), "application/json", self.dss_version)
        else:
            self.api(h, method, raw, segs, query, body)

    @staticmethod
    def read_body(h):
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = h.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError("Bad chunked encoding")
                if size == 0:
                    while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(h.rfile.read(size))
                h.rfile.readline(65537)
        length = h.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise ValueError("Bad Content-Length: %s" % length)
        if n < 0:
            raise ValueError("Bad Content-Length: %s" % length)
        return h.rfile.read(n)

    # --- DSS API --------------------------------------------------------------------------

    def api(self, h, method, raw, segs, query, body):
        self.recorder.begin()
        try:
            self._api(h, method, raw, segs, query, body)
        finally:
            self.recorder.end()

    def _api(self, h, method, raw, segs, query, body):
        rel = None
        for prefix in API_PREFIXES:
            if tuple(segs[:2]) == prefix:
                rel = segs[2:]
                break
        norm = "/" + "/".join(segs if rel is None else rel)
        fault = self.faults.match(method, norm)
        kind, options = None, self.rates.options
        if fault is not None and fault.kind is not None:
            kind, options = fault.kind, fault.options
        elif fault is None and rel is not None:
            kind = self.rates.draw(method, norm)
        delay = self.latency + (fault.delay_ms / 1000.0 if fault else 0)
        if delay > 0:
            time.sleep(delay)
        if kind is not None:
            self.recorder.fault(kind)
            self.recorder.record(method, raw)
            self.inject(h, kind, options, method, rel, segs, query, body)
            return
        if fault is not None and fault.drop:
            self.recorder.fault("rule")
            self.recorder.record(method, raw)
            h.drop_connection()
            return
        if fault is not None and fault.answers:
            self.recorder.fault("rule")
            status, data, ctype = fault.response()
            extra = ()
        else:
            status, data, ctype, extra = self.answer(h, method, rel, segs, query, body)
        self.recorder.record(method, raw)
        h.send_bytes(status, data, ctype, self.dss_version, extra)

    def inject(self, h, kind, opts, method, rel, segs, query, body):
        """Answers (or not) with fault ``kind`` (FAULT_KINDS), options ``opts``."""
        if kind in ("500", "503"):
            status = int(kind)
            err = ApiError(status, ERR_CODED, "Injected fault (HTTP %d)" % status)
            extra = (("Retry-After", str(opts["retry_after"])),) if status == 503 else ()
            h.send_bytes(status, json_bytes(err.body()), "application/json",
                         self.dss_version, extra)
            return
        if kind == "reset":
            h.reset_connection()
            return
        if kind == "stall":
            self.wake.wait(opts["stall_s"])
            h.drop_connection()
            return
        status, data, ctype, extra = self.answer(h, method, rel, segs, query, body)
        if kind == "truncate":
            # Content-Length of the whole body, half of it sent, then the connection closes.
            h.send_bytes(status, data[:len(data) // 2], ctype, self.dss_version, extra,
                         length=len(data))
            h.drop_connection()
        elif kind == "badjson":
            # A strict prefix of a JSON object or array is never valid JSON.
            h.send_bytes(200, data[:max(1, len(data) // 2)], "application/json",
                         self.dss_version, extra)
        elif kind == "drip":
            h.send_bytes(status, data, ctype, self.dss_version, extra,
                         drip=(opts["drip_bytes"], opts["drip_interval_ms"] / 1000.0))
        else:  # garbage
            h.send_bytes(status, data + opts["garbage_text"].encode("utf-8"), ctype,
                         self.dss_version, extra)

    def answer(self, h, method, rel, segs, query, body):
        """(status, body bytes, content type, extra headers) of a DSS API request."""
        try:
            if rel is None:
                raise ApiError(404, ERR_NOT_FOUND, "No API endpoint at /" + "/".join(segs))
            user = self.authenticate(h.headers)
            route, params = self.router.match(method, rel)
            if route.access != "instance":
                self.check_access(user, params["K"], route.access)
            req = Request(method, params, parse_qs(query, keep_blank_values=True), body, user)
            handler = getattr(self.state, route.handler_name)
            with self.state.lock:
                result = handler(req)
                if isinstance(result, RawResponse):
                    return 200, result.data, result.content_type, result.headers
                return 200, json_bytes(result), "application/json", ()
        except ApiError as e:
            return e.status, json_bytes(e.body()), "application/json", ()
        except Exception as e:  # a bug in the emulator: say so loudly, answer 500
            traceback.print_exc()
            err = ApiError(500, ERR_INTERNAL, "Emulator internal error: %r" % e)
            return 500, json_bytes(err.body()), "application/json", ()

    def authenticate(self, headers):
        """The User of the request's API key (Basic user or password, Bearer, ticket)."""
        auth = headers.get("Authorization") or ""
        scheme, _, value = auth.strip().partition(" ")
        candidates = []
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise ApiError(401, ERR_UNAUTHORIZED, "Malformed Basic authorization header")
            user_part, _, password = decoded.partition(":")
            candidates = [user_part, password]
        elif scheme.lower() == "bearer":
            candidates = [value.strip()]
        ticket = headers.get("X-DKU-APITicket")
        if ticket:
            candidates.append(ticket.strip())
        candidates = [c for c in candidates if c]
        if not candidates:
            raise ApiError(401, ERR_UNAUTHORIZED, "Not authenticated: no API key provided")
        for c in candidates:
            user = self.users.get(c)
            if user is not None:
                return user
        raise ApiError(401, ERR_UNAUTHORIZED, "Not authenticated: unknown API key")

    @staticmethod
    def check_access(user, project_key, access):
        if user.level(project_key) < LEVELS[access]:
            raise ApiError(403, ERR_FORBIDDEN,
                           "Action forbidden, you do not have %s rights on project %s"
                           % (access, project_key))

    # --- /__emulator__ --------------------------------------------------------------------

    def control(self, h, method, segs, body):
        what = "/".join(segs)
        try:
            status, result = 200, self.control_answer(h, method, what, body)
        except ApiError as e:
            status, result = e.status, e.body()
        h.send_bytes(status, json_bytes(result), "application/json", self.dss_version)
        if what == "shutdown" and status == 200:
            # Only once the answer is out: the process may exit as soon as serving stops.
            self.stopping.set()

    def control_answer(self, h, method, what, body):
        if what == "stats" and method == "GET":
            out = self.recorder.stats()
            out["paused"] = self.paused
            return out
        if what == "reset-stats" and method == "POST":
            self.recorder.reset()
            return {"msg": "stats reset"}
        if what == "faults" and method == "GET":
            return self.faults.list()
        if what == "faults" and method == "POST":
            spec = Request(method, {}, {}, body, None).json()
            return {"id": self.faults.add(spec)}
        if what == "faults" and method == "DELETE":
            self.faults.clear()
            return {"msg": "faults cleared"}
        if what == "fault-rates" and method == "GET":
            return self.rates.describe()
        if what == "fault-rates" and method == "POST":
            self.rates.configure(Request(method, {}, {}, body, None).json())
            return self.rates.describe()
        if what == "fault-rates" and method == "DELETE":
            self.rates.clear()
            return {"msg": "fault rates cleared"}
        if what == "pause" and method == "POST":
            if h.server is self.api_server:
                h.close_connection = True
            self.pause(keep=h.connection)
            return {"msg": "paused", "paused": True}
        if what == "resume" and method == "POST":
            self.resume()
            return {"msg": "resumed", "paused": False}
        if what == "shutdown" and method == "POST":
            h.close_connection = True
            return {"msg": "shutting down"}
        if what in ("stats", "reset-stats", "faults", "fault-rates", "pause", "resume",
                    "shutdown"):
            raise ApiError(405, ERR_METHOD, "Method %s not supported on /%s/%s"
                           % (method, CONTROL_PREFIX, what))
        raise ApiError(404, ERR_NOT_FOUND, "No control endpoint /%s/%s" % (CONTROL_PREFIX, what))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "DSSEmulator/1.0"
    sys_version = ""

    def log_message(self, format, *args):  # silence the default per-request log
        pass

    def do_GET(self):
        self.server.emulator.handle(self, "GET")

    def do_PUT(self):
        self.server.emulator.handle(self, "PUT")

    def do_POST(self):
        self.server.emulator.handle(self, "POST")

    def do_DELETE(self):
        self.server.emulator.handle(self, "DELETE")

    def do_PATCH(self):
        self.server.emulator.handle(self, "PATCH")

    def setup(self):
        super().setup()
        self.server.emulator.track(self.connection, self.server)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.emulator.untrack(self.connection)

    def send_bytes(self, status, data, content_type, dss_version, extra_headers=(),
                   length=None, drip=None):
        """The whole response in one send (no Nagle / delayed-ACK stall).

        ``length``: the Content-Length to announce, if not len(data) (a truncate
        fault).  ``drip`` = (bytes, seconds): the head at once, then the body that
        many bytes at a time with a pause between them (a drip fault)."""
        reason = self.responses.get(status, ("Error",))[0]
        lines = ["HTTP/1.1 %d %s" % (status, reason),
                 "Date: " + email.utils.formatdate(usegmt=True),
                 "Server: " + self.server_version,
                 "DSS-Version: " + dss_version,
                 "Content-Type: " + content_type,
                 "Content-Length: %d" % (len(data) if length is None else length)]
        lines.extend("%s: %s" % kv for kv in extra_headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if drip is None:
            self.wfile.write(head + data)
            return
        step, pause = drip
        self.wfile.write(head)
        for i in range(0, len(data), step):
            time.sleep(pause)
            self.wfile.write(data[i:i + step])

    def drop_connection(self):
        """Close the connection without answering (a 'drop' fault)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def reset_connection(self):
        """Close the connection with a TCP RST at once, without answering."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The socket is really closed (RST sent) only once its buffered reader is.
        self.rfile.close()
        self.connection.close()


def close_socket(sock):
    """Shuts a connection down from another thread (its handler sees the end)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address, emulator, control_only=False):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        if control_only:
            emulator.control_server = self
        else:
            emulator.api_server = self
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        # Client resets and broken pipes are routine in fault tests; stay quiet about them.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Emulator of the Dataiku DSS public REST API (dssfs tests).")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--fixture", action="append", default=[], metavar="DIR",
                    help="folder of projects in DSS's project-config layout (repeatable); "
                         "default: demo/ beside this script unless --generate is given")
    ap.add_argument("--generate", metavar="P,D",
                    help="add P synthetic projects of D datasets each")
    ap.add_argument("--api-key", action="append", default=[], metavar="KEY",
                    help="an admin API key (login 'admin'; repeatable)")
    ap.add_argument("--api-key-file", action="append", default=[], metavar="PATH",
                    help="file of admin API keys, one per line")
    ap.add_argument("--user", action="append", default=[], metavar="KEY:LOGIN:RULES",
                    help="a limited key; RULES = PROJECTKEY=level,...,*=level with level "
                         "none|read|write|admin (repeatable)")
    ap.add_argument("--latency-ms", type=float, default=0, help="delay of every API response")
    ap.add_argument("--log-requests", metavar="PATH", help="append 'METHOD PATH' per request")
    ap.add_argument("--dss-version", default="13.4.0", help="DSS-Version response header")
    ap.add_argument("--node-type", default="DESIGN", choices=("DESIGN", "AUTOMATION"),
                    help="nodeType of /instance-info")
    ap.add_argument("--control-port", type=int, metavar="N",
                    help="also serve /__emulator__ (only) on this port (0 = any free "
                         "port); needed for pause/resume")
    ap.add_argument("--control-port-file", metavar="PATH",
                    help="write the control port here (implies --control-port 0 if absent)")
    ap.add_argument("--fault-rate", action="append", default=[], metavar="KIND=RATE",
                    help="inject fault KIND (%s) into this fraction of DSS API requests "
                         "(repeatable)" % ", ".join(FAULT_KINDS))
    ap.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    ap.add_argument("--fault-methods", metavar="M,M",
                    help="draw faults only for these methods (default: all)")
    ap.add_argument("--fault-path-prefix", metavar="P", default="",
                    help="draw faults only for paths starting with P, e.g. /projects/SALES/")
    ap.add_argument("--retry-after", type=int, metavar="S",
                    help="Retry-After of 503 faults (default 1)")
    ap.add_argument("--stall-seconds", type=float, metavar="S",
                    help="how long a stall fault holds a request (default 60)")
    ap.add_argument("--drip-bytes", type=int, metavar="N",
                    help="drip faults send N bytes at a time (default 8)")
    ap.add_argument("--drip-interval-ms", type=float, metavar="MS",
                    help="... every MS milliseconds (default 10)")
    ap.add_argument("--garbage-text", metavar="TEXT",
                    help="what garbage faults append after the body (default xyz)")
    return ap.parse_args(argv)


def build_rates(args):
    """The FaultRates of the command line (SystemExit with a message if wrong)."""
    spec = {"seed": args.seed, "path_prefix": args.fault_path_prefix}
    if args.fault_methods:
        spec["methods"] = args.fault_methods
    for name, value in (("retry_after", args.retry_after), ("stall_s", args.stall_seconds),
                        ("drip_bytes", args.drip_bytes),
                        ("drip_interval_ms", args.drip_interval_ms),
                        ("garbage_text", args.garbage_text)):
        if value is not None:
            spec[name] = value
    for item in args.fault_rate:
        kind, sep, rate = item.partition("=")
        try:
            spec[kind.strip()] = float(rate)
        except ValueError:
            sep = ""
        if not sep:
            raise SystemExit("dss_emulator: --fault-rate expects KIND=RATE, e.g. 503=0.05")
    rates = FaultRates(args.seed)
    try:
        rates.configure(spec)
    except ApiError as e:
        raise SystemExit("dss_emulator: %s" % e.message)
    return rates


def build_users(args):
    users = {}

    def add(user):
        if user.key in users:
            raise SystemExit("dss_emulator: API key given twice")
        users[user.key] = user

    for key in args.api_key:
        add(User(key, "admin", admin=True))
    for path in args.api_key_file:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    add(User(line, "admin", admin=True))
    for spec in args.user:
        try:
            add(parse_user_spec(spec))
        except ValueError as e:
            raise SystemExit("dss_emulator: %s" % e)
    if not users:
        raise SystemExit("dss_emulator: no API key given (use --api-key, --api-key-file "
                         "or --user)")
    return users


def build_projects(args):
    projects = []
    fixtures = args.fixture or ([] if args.generate else [DEFAULT_FIXTURE])
    for folder in fixtures:
        projects.extend(load_fixture(folder))
    if args.generate:
        m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", args.generate)
        if not m:
            raise SystemExit("dss_emulator: --generate expects P,D (e.g. 20,50)")
        projects.extend(generate_instance(int(m.group(1)), int(m.group(2))))
    return projects


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    users = build_users(args)
    rates = build_rates(args)
    state = State(build_projects(args), node_type=args.node_type)
    emulator = Emulator(state, users, latency_ms=max(0.0, args.latency_ms),
                        log_path=args.log_requests, dss_version=args.dss_version,
                        rates=rates)
    server = Server((args.host, args.port), emulator)
    control = None
    if args.control_port is not None or args.control_port_file:
        control = Server((args.host, args.control_port or 0), emulator, control_only=True)
    port = server.server_address[1]
    if control is not None and args.control_port_file:
        write_port_file(args.control_port_file, control.server_address[1])
    if args.port_file:
        write_port_file(args.port_file, port)
    print("dss_emulator: %d projects, listening on http://%s:%d/%s"
          % (len(state.projects), args.host, port,
             " (control port %d)" % control.server_address[1] if control else ""),
          file=sys.stderr, flush=True)

    def on_sigterm(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    emulator.serve(server)
    if control is not None:
        emulator.serve(control)
    try:
        while not emulator.stopping.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
