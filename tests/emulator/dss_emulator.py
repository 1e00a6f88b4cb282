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
import atexit
import base64
import binascii
import calendar
import difflib
import email.utils
import hashlib
import io
import json
import mimetypes
import os
import random
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
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

def _name_of(o):
    return o.get("name") or o["id"]


def _summary(o, *keys):
    """{id, projectKey, name} + ``keys`` of ``o`` that it has."""
    out = {"id": o["id"], "projectKey": o["projectKey"], "name": _name_of(o)}
    for k in keys:
        if k in o:
            out[k] = o[k]
    return out


def _dashboard_item(o):
    pages = o.get("pages") if isinstance(o.get("pages"), list) else []
    tiles = sum(len(((pg.get("grid") or {}).get("tiles") or []))
                for pg in pages if isinstance(pg, dict))
    out = _summary(o, "owner", "listed")
    out.update({"numPages": len(pages), "numTiles": tiles, "tags": o.get("tags", [])})
    return out


def _comparison_item(o):
    out = _summary(o)
    out["name"] = o.get("displayName") or o["id"]
    view = comparison_view(o)
    for k in ("displayName", "modelTaskType", "predictionType"):
        if k in view:
            out[k] = view[k]
    return out


def _api_service_item(o):
    out = _summary(o)
    method = o.get("authMethod")
    if method is None:
        method = "PUBLIC" if o.get("publicAccess") else "API_KEYS"
    out["authMethod"] = method
    out["endpoints"] = [{"id": e.get("id"), "type": e.get("type")}
                        for e in o.get("endpoints") or [] if isinstance(e, dict)]
    return out


class Kind:
    """A type stored as ``<folder>/<id>.json`` (the REST object minus its identity)."""

    def __init__(self, folder, label, tagged, tag_seed, item, put_answer="msg"):
        self.folder = folder          # folder of the project directory (and of the export)
        self.label = label            # in "<label> does not exist: K.id"
        self.tagged = tagged          # has versionTag / creationTag (made up if missing)
        self.tag_seed = tag_seed      # seed of made-up tags
        self.item = item              # REST object -> listing item
        self.put_answer = put_answer  # "msg" ({msg}) or "object" (the saved object)


OBJECT_KINDS = {
    "dashboards": Kind("dashboards", "dashboard", True, "dashboard", _dashboard_item, "object"),
    "insights": Kind("insights", "insight", True, "insight",
                     lambda o: dict(_summary(o, "type", "listed", "owner"),
                                    tags=o.get("tags", [])), "object"),
    "zones": Kind("zones", "flow zone", False, "zone", lambda o: o),
    "saved_models": Kind("saved_models", "saved model", True, "savedmodel",
                         lambda o: _summary(o, "type", "savedModelType", "contentType")),
    "evaluation_stores": Kind("model_evaluation_stores", "model evaluation store", True,
                              "mes", lambda o: _summary(o, "mesFlavor")),
    "worksheets": Kind("statistics_worksheets", "statistics worksheet", True, "worksheet",
                       lambda o: _summary(o, "dataSpec"), "object"),
    "comparisons": Kind("model_comparisons", "model comparison", True, "comparison",
                        _comparison_item),
    "api_services": Kind("lambda_services", "API service", True, "apiservice",
                         _api_service_item),
    "code_studios": Kind("code_studios", "code studio", True, "codestudio",
                         lambda o: _summary(o, "owner", "templateId", "desc")),
    "knowledge_banks": Kind("knowledge_banks", "knowledge bank", True, "knowledgebank",
                            lambda o: dict(_summary(o), tags=o.get("tags", [])), "object"),
    "agent_tools": Kind("agent_tools", "agent tool", True, "agenttool",
                        lambda o: dict(_summary(o, "type"), tags=o.get("tags", []))),
    "managed_folders": Kind("managed_folders", "managed folder", True, "managedfolder",
                            lambda o: o),
    "webapps": Kind("web_apps", "webapp", True, "webapp",
                    lambda o: dict(_summary(o, "type"), tags=o.get("tags", [])), "object"),
}

# Code files of a webapp, kept in the side folder web_apps/<id>/ and served in "params".
WEBAPP_FILES = (("body.html", "html"), ("app.js", "js"), ("style.css", "css"),
                ("backend.py", "python"), ("ui.R", "ui"), ("server.R", "server"))

# Payload file extensions of code recipes, by recipe type (first = the one written);
# any other type (visual: shaker, join, split, ...; plugin: CustomCode_<x>) uses the type.
CODE_RECIPE_EXTS = {
    "python": ("py",), "pyspark": ("py",), "r": ("r", "R"), "sparkr": ("r", "R"),
    "sql_query": ("sql",), "sql_script": ("sql",), "hive": ("sql",), "impala": ("sql",),
    "spark_sql_query": ("sql",), "shell": ("sh",), "spark_scala": ("scala",),
    "julia": ("jl",),
}

DEFAULT_ZONE = {"name": "Default", "color": "#D1D8DA", "items": [], "shared": [],
                "tags": [], "customFields": {}, "checklists": {"checklists": []}}


def recipe_payload_exts(rtype):
    if not isinstance(rtype, str) or not rtype:
        return ()
    return CODE_RECIPE_EXTS.get(rtype, (rtype,))


def comparison_view(o):
    """A model comparison as the 14.x client reads it: ``smartId`` also as ``refId``,
    ``predictionType`` also as ``modelTaskType`` (stored files have the older names)."""
    out = dict(o)
    if "modelTaskType" not in out and "predictionType" in out:
        out["modelTaskType"] = out["predictionType"]
    models = out.get("comparedModels")
    if isinstance(models, list):
        out["comparedModels"] = [
            dict(m, refId=m["smartId"]) if isinstance(m, dict) and "smartId" in m
            and "refId" not in m else m for m in models]
    return out


def comparison_unview(body):
    """Inverse of comparison_view for a saved body: an alias equal to the stored name
    is dropped, a changed one is written under the stored name."""
    out = dict(body)
    if "modelTaskType" in out and "predictionType" in out:
        out["predictionType"] = out.pop("modelTaskType")
    models = out.get("comparedModels")
    if isinstance(models, list):
        fixed = []
        for m in models:
            if isinstance(m, dict) and "refId" in m and "smartId" in m:
                m = dict(m)
                m["smartId"] = m.pop("refId")
            fixed.append(m)
        out["comparedModels"] = fixed
    return out


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
        # Types stored one <id>.json per object (OBJECT_KINDS): kind -> {id: REST object}
        self.objects = {kind: {} for kind in OBJECT_KINDS}
        self.saved_models = self.objects["saved_models"]
        self.managed_folders = self.objects["managed_folders"]
        self.sql_notebooks = {}     # id -> content (params.json + identity)
        self.sql_histories = {}     # id -> {cellId: [run]} (queries.json "queries")
        self.jupyter = {}           # notebook name -> nbformat JSON
        self.analyses = {}          # analysis id -> core params (+ identity)
        self.ml_tasks = {}          # analysis id -> {ML task id: settings}
        self.library = {}           # library file path "a/b.py" -> [bytes, lastModified ms]
        self.library_dirs = {}      # library folder path "a" -> lastModified ms
        self.folder_seeds = {}      # managed folder id -> folder of demo files to load
        # The default zone exists even when the folder has no zones/default.json.
        self.add_object("zones", "default", json.loads(json.dumps(DEFAULT_ZONE)))

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

    def add_object(self, kind, oid, body):
        """An object of an OBJECT_KINDS type, from its stored file (identity added)."""
        tags = self._tags(OBJECT_KINDS[kind].tag_seed, oid, body) \
            if OBJECT_KINDS[kind].tagged else None
        self.objects[kind][oid] = with_identity({"projectKey": self.key, "id": oid}, body, tags)

    def add_saved_model(self, mid, body):
        self.add_object("saved_models", mid, body)

    def add_managed_folder(self, fid, body):
        self.add_object("managed_folders", fid, body)


def _json_files(folder):
    """Sorted (stem, path) of the *.json files of a folder (none if it is absent)."""
    if not os.path.isdir(folder):
        return []
    out = []
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".json") and os.path.isfile(os.path.join(folder, fn)):
            out.append((fn[:-5], os.path.join(folder, fn)))
    return out


def _payload_file(folder, stem, rtype):
    """(ext, path) of the payload of recipe ``stem`` of type ``rtype``, or None.

    Chosen by the recipe's type (a recipe folder may hold a stale ``<stem>.join`` beside
    the ``<stem>.sql`` of a sql_query recipe); other ``<stem>.*`` files are ignored."""
    for ext in recipe_payload_exts(rtype):
        fp = os.path.join(folder, "%s.%s" % (stem, ext))
        if os.path.isfile(fp):
            return ext, fp
    return None


def _made_up_ms(*seed):
    """A deterministic epoch-ms date in 2020-04..2024-12 (library and folder files)."""
    return made_up_tags("", *seed)[0]["lastModifiedOn"]


def _load_library(p, lib):
    """lib/ (any files, any depth, binary included) into p.library / p.library_dirs."""
    for dirpath, dirnames, filenames in os.walk(lib):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, lib).replace(os.sep, "/")
        if rel_dir != ".":
            p.library_dirs[rel_dir] = _made_up_ms(p.key, "lib", rel_dir)
        for fn in sorted(filenames):
            rel = fn if rel_dir == "." else rel_dir + "/" + fn
            with open(os.path.join(dirpath, fn), "rb") as f:
                p.library[rel] = [f.read(), _made_up_ms(p.key, "lib", rel)]


def _load_webapp(p, wid, fp, side):
    body = read_json_file(fp)
    if os.path.isdir(side):
        params = dict(body.get("params") or {})
        for fn, key in WEBAPP_FILES:
            code = os.path.join(side, fn)
            if os.path.isfile(code):
                params[key] = read_text_file(code)
        body["params"] = params
    p.add_object("webapps", wid, body)


def _load_sql_notebooks(p, folder):
    if not os.path.isdir(folder):
        return
    for nid in sorted(os.listdir(folder)):
        params = os.path.join(folder, nid, "params.json")
        if not os.path.isfile(params):
            continue
        body = read_json_file(params)
        p.sql_notebooks[nid] = with_identity({"projectKey": p.key, "id": nid}, body,
                                             p._tags("sqlnotebook", nid, body))
        queries = os.path.join(folder, nid, "queries.json")
        history = read_json_file(queries).get("queries", {}) if os.path.isfile(queries) else {}
        p.sql_histories[nid] = history if isinstance(history, dict) else {}


def _load_analyses(p, folder):
    if not os.path.isdir(folder):
        return
    for aid in sorted(os.listdir(folder)):
        core = os.path.join(folder, aid, "core_params.json")
        if not os.path.isfile(core):
            continue
        body = read_json_file(core)
        p.analyses[aid] = with_identity({"projectKey": p.key, "id": aid}, body,
                                        p._tags("analysis", aid, body))
        tasks = p.ml_tasks[aid] = {}
        mldir = os.path.join(folder, aid, "ml")
        for mid in sorted(os.listdir(mldir)) if os.path.isdir(mldir) else ():
            params = os.path.join(mldir, mid, "params.json")
            if os.path.isfile(params):
                tasks[mid] = with_identity(
                    {"projectKey": p.key, "analysisId": aid, "id": mid},
                    read_json_file(params))


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
        body = read_json_file(fp)
        found = _payload_file(rdir, name, body.get("type"))
        ext, payload = (found[0], read_text_file(found[1])) if found else (None, "")
        p.add_recipe(name, body, payload, ext)

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

    for kind, spec in OBJECT_KINDS.items():
        folder = os.path.join(path, spec.folder)
        for oid, fp in _json_files(folder):
            if kind == "webapps":
                _load_webapp(p, oid, fp, os.path.join(folder, oid))
            else:
                p.add_object(kind, oid, read_json_file(fp))
            seed = os.path.join(folder, oid + ".files")
            if kind == "managed_folders" and os.path.isdir(seed):
                p.folder_seeds[oid] = seed

    _load_sql_notebooks(p, os.path.join(path, "notebooks", "sql"))
    nbdir = os.path.join(path, "ipython_notebooks")
    if os.path.isdir(nbdir):
        for fn in sorted(os.listdir(nbdir)):
            if fn.endswith(".ipynb") and os.path.isfile(os.path.join(nbdir, fn)):
                p.jupyter[fn[:-6]] = read_json_file(os.path.join(nbdir, fn))
    _load_analyses(p, os.path.join(path, "analysis"))
    lib = os.path.join(path, "lib")
    if os.path.isdir(lib):
        _load_library(p, lib)
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
# Files: library paths, managed-folder contents on disk, streamed bodies
# ---------------------------------------------------------------------------------------

CHUNK = 64 * 1024  # streaming unit of managed-folder uploads and downloads


def _clean_path(path, what, allow_root=False):
    """A "/"-separated relative path (leading, doubled and trailing "/" ignored)."""
    parts = [s for s in path.split("/") if s]
    if any(s in (".", "..") or "\0" in s for s in parts):
        raise bad_request("Invalid %s path: %s" % (what, path))
    if not parts and not allow_root:
        raise bad_request("Empty %s path" % what)
    return "/".join(parts)


def lib_path(path, allow_root=False):
    return _clean_path(path, "library", allow_root)


def folder_path(path):
    return _clean_path(path, "managed folder")


def library_mime(path, data):
    guess = mimetypes.guess_type(path)[0]
    if guess:
        return guess
    try:
        data.decode("utf-8")
        return "text/plain"
    except UnicodeDecodeError:
        return "application/octet-stream"


class StreamResponse:
    """A success answer streamed from an open file (managed-folder download).

    Slicing (``data[:n]``) and ``+ bytes`` work as on bytes, for the fault kinds."""

    def __init__(self, f, size, content_type, limit=None, tail=b""):
        self.f = f
        self.size = size
        self.content_type = content_type
        self.limit = size if limit is None else min(limit, size)
        self.tail = tail

    def __len__(self):
        return self.limit + len(self.tail)

    def __getitem__(self, s):
        assert isinstance(s, slice) and not s.start and s.step is None
        return StreamResponse(self.f, self.size, self.content_type, s.stop, b"")

    def __add__(self, extra):
        return StreamResponse(self.f, self.size, self.content_type, self.limit,
                              self.tail + extra)

    def write_to(self, out, drip=None):
        try:
            left = self.limit
            step = drip[0] if drip else CHUNK
            while left > 0:
                chunk = self.f.read(min(step, left))
                if not chunk:
                    break
                if drip:
                    time.sleep(drip[1])
                out.write(chunk)
                left -= len(chunk)
            if self.tail:
                out.write(self.tail)
        finally:
            self.close()

    def close(self):
        self.f.close()


class BodyReader:
    """A request body read on demand (Content-Length or chunked), never held whole."""

    def __init__(self, h):
        self.h = h
        self.rfile = h.rfile
        self.chunked = "chunked" in (h.headers.get("Transfer-Encoding") or "").lower()
        self.left = 0
        self.done = False
        if not self.chunked:
            length = h.headers.get("Content-Length") or "0"
            try:
                self.left = int(length)
            except ValueError:
                raise ValueError("Bad Content-Length: %s" % length)
            if self.left < 0:
                raise ValueError("Bad Content-Length: %s" % length)
            self.done = self.left == 0

    def read(self, n=CHUNK):
        """Up to n bytes; b"" at the end."""
        if self.done:
            return b""
        if self.chunked and self.left == 0:
            line = self.rfile.readline(65537)
            try:
                self.left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise bad_request("Bad chunked encoding")
            if self.left == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                self.done = True
                return b""
        data = self.rfile.read(min(n, self.left))
        if not data:
            raise bad_request("Request body ended early")
        self.left -= len(data)
        if self.left == 0:
            if self.chunked:
                self.rfile.readline(65537)
            else:
                self.done = True
        return data

    def drain(self):
        """Reads the rest; if the body is broken, the connection is closed after the answer."""
        try:
            while self.read():
                pass
        except (ApiError, OSError):
            self.done = True
            self.h.close_connection = True


def copy_multipart_part(body, content_type, part_name, out):
    """Streams the part named ``part_name`` of a multipart body into ``out``.

    Any part Content-Type and any (or an empty) filename are accepted; other parts are
    skipped. 400 if the body is not multipart or has no such part."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise bad_request("multipart body without a boundary")
    delim = b"--" + m.group(1).encode("latin-1")
    buf = b""
    eof = False

    def more():
        nonlocal buf, eof
        chunk = body.read(CHUNK)
        if not chunk:
            eof = True
        buf += chunk

    while True:                          # preamble, up to the first delimiter
        i = buf.find(delim)
        if i >= 0:
            buf = buf[i + len(delim):]
            break
        if eof:
            raise bad_request("multipart body without a part")
        buf = buf[-len(delim):]
        more()
    found = False
    sep = b"\r\n" + delim
    while True:
        while len(buf) < 2 and not eof:
            more()
        if buf.startswith(b"--") or not buf:
            break                        # the closing delimiter
        while b"\r\n\r\n" not in buf:
            if eof or len(buf) > 65536:
                raise bad_request("bad multipart part headers")
            more()
        head, _, buf = buf.partition(b"\r\n\r\n")
        name = re.search(rb'(?i)content-disposition:[^\r\n]*;\s*name="([^"]*)"', head)
        target = out if (not found and name and name.group(1).decode("latin-1") == part_name) \
            else None
        found = found or target is not None
        while True:                      # the part's data, up to the next delimiter
            i = buf.find(sep)
            if i >= 0:
                if target is not None:
                    target.write(buf[:i])
                buf = buf[i + len(sep):]
                break
            if eof:
                raise bad_request("multipart body ended inside a part")
            keep = len(sep) - 1
            if len(buf) > keep:
                if target is not None:
                    target.write(buf[:len(buf) - keep])
                buf = buf[len(buf) - keep:]
            more()
    body.drain()
    if not found:
        raise bad_request("multipart body without a part named '%s'" % part_name)


class FolderStore:
    """Managed-folder contents, on disk in a temporary directory the emulator owns.

    ``<root>/<n>/`` holds the files of the n-th folder seen; removed at exit (and a
    folder left by a killed emulator is removed by the next one, see README)."""

    PREFIX = "dss-emu-folders-"

    def __init__(self):
        self.remove_stale()
        self.root = tempfile.mkdtemp(prefix="%s%d-" % (self.PREFIX, os.getpid()))
        self.dirs = {}
        self.counter = 0
        atexit.register(self.cleanup)

    @classmethod
    def remove_stale(cls):
        base = tempfile.gettempdir()
        for name in os.listdir(base):
            if not name.startswith(cls.PREFIX):
                continue
            pid = name[len(cls.PREFIX):].split("-", 1)[0]
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    alive = b"dss_emulator" in f.read()
            except (OSError, ValueError):
                alive = False
            if not alive:
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def folder(self, key, fid):
        d = self.dirs.get((key, fid))
        if d is None:
            self.counter += 1
            d = self.dirs[(key, fid)] = os.path.join(self.root, str(self.counter))
            os.mkdir(d)
        return d

    def seed(self, key, fid, source):
        """Copy demo files (a <id>.files folder) in, with made-up dates."""
        root = self.folder(key, fid)
        for dirpath, dirnames, filenames in os.walk(source):
            rel_dir = os.path.relpath(dirpath, source)
            for fn in filenames:
                rel = os.path.normpath(os.path.join(rel_dir, fn))
                dest = os.path.join(root, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copyfile(os.path.join(dirpath, fn), dest)
                when = _made_up_ms(key, "folder", fid, rel)
                os.utime(dest, ns=(when * 1_000_000, when * 1_000_000))

    def temp_file(self):
        self.counter += 1
        return os.path.join(self.root, ".upload-%d-%d" % (self.counter, threading.get_ident()))

    @staticmethod
    def listing(root):
        items = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                fp = os.path.join(dirpath, fn)
                st = os.stat(fp)
                rel = os.path.relpath(fp, root).replace(os.sep, "/")
                items.append({"path": "/" + rel, "size": st.st_size,
                              "lastModified": st.st_mtime_ns // 1_000_000})
        return sorted(items, key=lambda i: i["path"])

    @staticmethod
    def install(tmp, root, rel, now):
        parts = rel.split("/")
        d = root
        for part in parts[:-1]:
            d = os.path.join(d, part)
            if os.path.isfile(d):
                raise bad_request("%s is a file" % os.path.relpath(d, root))
            if not os.path.isdir(d):
                os.mkdir(d)
        dest = os.path.join(root, rel)
        if os.path.isdir(dest):
            raise bad_request("%s is a folder" % rel)
        os.utime(tmp, ns=(now * 1_000_000, now * 1_000_000))
        os.replace(tmp, dest)

    @staticmethod
    def delete(root, rel):
        fp = os.path.join(root, rel)
        if os.path.isdir(fp):
            shutil.rmtree(fp)
        elif os.path.lexists(fp):
            os.unlink(fp)
        d = os.path.dirname(fp)   # empty folders do not exist in a managed folder
        while d != root and os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)
            d = os.path.dirname(d)

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
# The instance scope: users, groups, connections, settings, code envs, plugins, project
# folders, clusters, meanings (loaded from <fixture>/instance/, see README.md)
# ---------------------------------------------------------------------------------------

# Keys whose string values are secrets wherever they appear in connections, users, the
# general settings and plugin settings (plus the "value" of a user secret whose "secret"
# is true). DSS returns them encrypted; the emulator keeps the cleartext.
SECRET_KEYS = frozenset(("password", "secretKey", "clientSecret", "privateKey",
                         "sessionToken", "refreshToken", "accessToken", "bindPassword",
                         "apiKey", "token", "sasToken", "passphrase"))
ENCRYPTED_PREFIX = "e:AES:X2:"
# Salt of the made-up encryption: the encrypted form is a hash, it reveals nothing.
_SECRET_SALT = b"dssfs-emulator-secret-v1\x00"

ERR_DECRYPT = "com.dataiku.dip.exceptions.CodedException"
DSS_ADMIN = "dss-admin"   # route access: the key must be an instance admin


class SecretBox:
    """The emulator's stand-in for DSS's secret encryption.

    ``encrypt`` maps a cleartext to ``e:AES:X2:<base64 of a salted SHA-256>`` (the same
    cleartext always gives the same string, so repeated GETs are byte-identical) and
    remembers it, so that a PUT sending that string back "decrypts" to the cleartext, as
    DSS decrypts the values it encrypted. An "e:AES:" string the emulator never issued is
    refused (400): it could only be a corrupted or foreign value."""

    def __init__(self):
        self.known = {}

    def encrypt(self, clear):
        if clear == "" or clear.startswith("e:"):
            return clear
        digest = hashlib.sha256(_SECRET_SALT + clear.encode("utf-8")).digest()
        token = ENCRYPTED_PREFIX + base64.b64encode(digest).decode("ascii")
        self.known[token] = clear
        return token

    def decrypt(self, value, where):
        if not value.startswith("e:"):
            return value
        try:
            return self.known[value]
        except KeyError:
            raise ApiError(400, ERR_DECRYPT, "Cannot decrypt the value of %s: not a value "
                           "encrypted by this instance" % where)

    @staticmethod
    def walk(obj, fn, path=""):
        """A copy of obj where fn(value, path) replaces every secret string."""
        if isinstance(obj, dict):
            secret_item = obj.get("secret") is True
            out = {}
            for k, v in obj.items():
                p = "%s.%s" % (path, k) if path else k
                if isinstance(v, str) and (k in SECRET_KEYS or (secret_item and k == "value")):
                    out[k] = fn(v, p)
                else:
                    out[k] = SecretBox.walk(v, fn, p)
            return out
        if isinstance(obj, list):
            # Paths name list items by their "name" when they have one: secrets[GITHUB_TOKEN]
            return [SecretBox.walk(v, fn, "%s[%s]" % (
                path, v["name"] if isinstance(v, dict) and isinstance(v.get("name"), str)
                else i)) for i, v in enumerate(obj)]
        return obj

    def hide(self, obj):
        return self.walk(obj, lambda v, p: self.encrypt(v))

    def reveal(self, obj):
        return self.walk(obj, self.decrypt)

    @staticmethod
    def dump(obj):
        """{path: cleartext} of the secrets of a stored object."""
        out = {}

        def keep(v, p):
            out[p] = v
            return v
        SecretBox.walk(obj, keep)
        return out


class PluginFiles:
    """A dev plugin's files, with the attributes the library helpers use."""

    def __init__(self, key):
        self.key = key            # used in messages ("plugin file does not exist: ID.path")
        self.library = {}         # path -> [bytes, lastModified]
        self.library_dirs = {}    # path -> lastModified


class Instance:
    """Everything of the instance scope. Stored objects hold cleartext secrets."""

    def __init__(self):
        self.info = {"nodeId": "dssfs-emulator", "nodeName": "dssfs emulator"}
        self.users = {}            # login -> settings
        self.passwords = {}        # login -> password set by a PUT (never returned)
        self.groups = {}           # name -> definition
        self.connections = {}      # name -> definition
        self.general_settings = {}
        self.variables = {}
        self.code_envs = {}        # (LANG, name) -> settings
        self.plugins = {}          # id -> {"desc", "isDev", "settings", "files"}
        self.folders = {}          # id -> {id, name, parentId, projectKeys, owner, permissions}
        self.clusters = {}         # id -> settings
        self.meanings = {}         # id -> definition


def _instance_defaults(inst):
    inst.users.setdefault("admin", {
        "login": "admin", "displayName": "Administrator", "email": "admin@example.com",
        "enabled": True, "sourceType": "LOCAL", "userProfile": "DESIGNER",
        "groups": ["administrators"], "adminProperties": {}, "userProperties": {},
        "secrets": [], "credentials": {}, "preferences": {}, "creationDate": T_2020})
    inst.groups.setdefault("administrators", {
        "name": "administrators", "description": "DSS administrators", "sourceType": "LOCAL",
        "admin": True, "ldapGroupNames": [], "mayCreateProjects": True})
    inst.folders.setdefault("ROOT", {"id": "ROOT", "projectKeys": [], "owner": "admin",
                                     "permissions": []})


def load_instance(path):
    """<fixture>/instance/ into an Instance (layout: README.md, "Instance scope")."""
    inst = Instance()

    def opt(name, default):
        fp = os.path.join(path, name)
        return read_json_file(fp) if os.path.exists(fp) else default

    inst.info.update(opt("instance-info.json", {}))
    for u in opt("users.json", []):
        u = dict(u)
        pw = u.pop("password", None)
        if pw is not None:
            inst.passwords[u["login"]] = pw
        inst.users[u["login"]] = u
    inst.groups = {g["name"]: g for g in opt("groups.json", [])}
    inst.connections = opt("connections.json", {})
    for name, c in inst.connections.items():
        c.setdefault("name", name)
    inst.general_settings = opt("general-settings.json", {})
    inst.variables = opt("variables.json", {})
    for lang in ("python", "r"):
        for name, fp in _json_files(os.path.join(path, "code-envs", lang)):
            inst.code_envs[(lang.upper(), name)] = read_json_file(fp)
    for is_dev, sub in ((True, "dev"), (False, "installed")):
        base = os.path.join(path, "plugins", sub)
        if not os.path.isdir(base):
            continue
        for pid in sorted(os.listdir(base)):
            pdir = os.path.join(base, pid)
            if not os.path.isdir(pdir):
                continue
            desc_fp = os.path.join(pdir, "plugin.json")
            desc = read_json_file(desc_fp) if os.path.exists(desc_fp) else {"id": pid}
            files = PluginFiles(pid)
            if is_dev:
                _load_tree(files, pdir, "plugin:" + pid)
            settings_fp = os.path.join(path, "plugins", "settings", pid + ".json")
            settings = read_json_file(settings_fp) if os.path.exists(settings_fp) else {}
            inst.plugins[pid] = {"desc": desc, "isDev": is_dev, "settings": settings,
                                 "files": files}
    for f in opt("project-folders.json", []):
        f = dict(f)
        f.setdefault("projectKeys", [])
        f.setdefault("permissions", [])
        inst.folders[f["id"]] = f
    for name, fp in _json_files(os.path.join(path, "clusters")):
        inst.clusters[name] = read_json_file(fp)
    for name, fp in _json_files(os.path.join(path, "meanings")):
        inst.meanings[name] = read_json_file(fp)
    _instance_defaults(inst)
    return inst


def _load_tree(tree, root, seed):
    """Files (any depth, binary included) and folders of root into a PluginFiles."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if rel_dir != ".":
            tree.library_dirs[rel_dir] = _made_up_ms(seed, rel_dir)
        for fn in sorted(filenames):
            rel = fn if rel_dir == "." else rel_dir + "/" + fn
            with open(os.path.join(dirpath, fn), "rb") as f:
                tree.library[rel] = [f.read(), _made_up_ms(seed, rel)]


def minimal_instance():
    """The admin scope of an instance without an instance/ folder (e.g. --generate):
    the admin user, its group, the managed filesystem connection, ROOT."""
    inst = Instance()
    inst.connections = {"filesystem_managed": {
        "name": "filesystem_managed", "type": "Filesystem",
        "params": {"root": "/data/dss/managed_datasets"}, "usableBy": "ALL",
        "allowedGroups": [], "allowWrite": True, "allowManagedDatasets": True,
        "allowManagedFolders": True, "detailsReadability": {"readableBy": "NONE"}}}
    inst.general_settings = {"impersonation": {"enabled": False}}
    _instance_defaults(inst)
    return inst


def _ident_check(body, ident):
    for k, v in ident.items():
        if k in body and body[k] != v:
            raise bad_request("%s mismatch: body has %r but the URL says %r" % (k, body[k], v))


def _instance_not_found(kind, name):
    return ApiError(404, ERR_NOT_FOUND, "%s does not exist: %s" % (kind, name))


def plugin_path(path, allow_root=False):
    return _clean_path(path, "plugin file", allow_root)


class InstanceHandlers:
    """Handlers of the instance scope (mixed into State; run with State.lock held)."""

    # --- users and groups -----------------------------------------------------------------

    USER_INFO_KEYS = ("login", "displayName", "groups", "email", "enabled")
    USER_LIST_KEYS = USER_INFO_KEYS + ("sourceType", "userProfile")

    def user(self, login):
        try:
            return self.inst.users[login]
        except KeyError:
            raise _instance_not_found("User", login)

    def list_users_info(self, req):
        return [_summary_keys(u, self.USER_INFO_KEYS) for u in self.inst.users.values()]

    def get_user_info(self, req):
        return _summary_keys(self.user(req.params["L"]), self.USER_INFO_KEYS)

    def list_groups_info(self, req):
        return [_summary_keys(g, ("name", "description", "sourceType"))
                for g in self.inst.groups.values()]

    def admin_list_users(self, req):
        if req.bool_arg("includeSettings"):
            return [self.secrets.hide(u) for u in self.inst.users.values()]
        return [_summary_keys(u, self.USER_LIST_KEYS) for u in self.inst.users.values()]

    def admin_get_user(self, req):
        return self.secrets.hide(self.user(req.params["L"]))

    def store_user(self, login, body, old):
        _ident_check(body, {"login": login})
        password = body.pop("password", None)
        new = self.secrets.reveal(body)
        new = with_identity({"login": login}, new)
        if "creationDate" in old:
            new["creationDate"] = old["creationDate"]
        if isinstance(password, str) and password:
            self.inst.passwords[login] = password
        self.inst.users[login] = new
        return new

    def admin_put_user(self, req):
        login = req.params["L"]
        self.store_user(login, req.json(), self.user(login))
        return self.msg("User %s saved" % login)

    def own_user(self, req):
        login = req.user.login
        u = self.inst.users.get(login)
        if u is None:   # a key whose login the instance does not list
            u = {"login": login, "displayName": login, "email": "", "enabled": True,
                 "sourceType": "LOCAL", "userProfile": "READER", "groups": [],
                 "userProperties": {}, "secrets": [], "credentials": {}, "preferences": {}}
        return u

    def get_current_user(self, req):
        return self.secrets.hide(self.own_user(req))

    def put_current_user(self, req):
        old = self.own_user(req)
        body = req.json()
        if not req.user.admin:   # what a user may not change about himself
            for k in ("groups", "userProfile", "enabled", "sourceType", "adminProperties"):
                if k in old:
                    body[k] = old[k]
        self.store_user(req.user.login, body, old)
        return self.msg("User %s saved" % req.user.login)

    def group(self, name):
        try:
            return self.inst.groups[name]
        except KeyError:
            raise _instance_not_found("Group", name)

    def admin_list_groups(self, req):
        return list(self.inst.groups.values())

    def admin_get_group(self, req):
        return self.group(req.params["G"])

    def admin_put_group(self, req):
        name = req.params["G"]
        self.group(name)
        body = req.json()
        _ident_check(body, {"name": name})
        self.inst.groups[name] = with_identity({"name": name}, body)
        return self.msg("Group %s saved" % name)

    # --- connections ------------------------------------------------------------------------

    def connection(self, name):
        try:
            return self.inst.connections[name]
        except KeyError:
            # The errorType and message downstream tools match (dss-rest-api.md §2); 404.
            raise ApiError(404, ERR_ILLEGAL_ARGUMENT, "Connection '%s' does not exist" % name)

    def admin_list_connections(self, req):
        out = {}
        for name, c in self.inst.connections.items():
            item = self.secrets.hide(c)
            # The 14.x client's list item reads "id" (its name) and "label" (its type).
            item.setdefault("id", name)
            item.setdefault("label", c.get("type"))
            out[name] = item
        return out

    def admin_get_connection(self, req):
        return self.secrets.hide(self.connection(req.params["C"]))

    def admin_put_connection(self, req):
        name = req.params["C"]
        self.connection(name)
        body = req.json()
        _ident_check(body, {"name": name})
        self.inst.connections[name] = with_identity({"name": name}, self.secrets.reveal(body))
        return self.msg("Connection %s saved" % name)

    def user_groups(self, login):
        u = self.inst.users.get(login)
        return set(u.get("groups") or []) if u else set()

    def connection_names(self, req):
        ctype = req.arg("type") or "all"
        groups = self.user_groups(req.user.login)
        out = []
        for name, c in self.inst.connections.items():
            if ctype.lower() != "all" and c.get("type") != ctype:
                continue
            if not req.user.admin and c.get("usableBy", "ALL") != "ALL" \
                    and not groups & set(c.get("allowedGroups") or []):
                continue
            out.append(name)
        return out

    # --- general settings, variables --------------------------------------------------------

    def get_general_settings(self, req):
        return self.secrets.hide(self.inst.general_settings)

    def put_general_settings(self, req):
        self.inst.general_settings = self.secrets.reveal(req.json())
        return self.msg("General settings saved")

    def get_global_variables(self, req):
        return self.inst.variables

    def put_global_variables(self, req):
        self.inst.variables = req.json()
        return self.msg("Global variables saved")

    # --- code envs ----------------------------------------------------------------------------

    def code_env(self, req):
        lang, name = req.params["LANG"].upper(), req.params["E"]
        if lang not in ("PYTHON", "R"):
            raise bad_request("Unknown code env language: %s (PYTHON or R)" % req.params["LANG"])
        try:
            return lang, name, self.inst.code_envs[(lang, name)]
        except KeyError:
            raise _instance_not_found("Code env", "%s/%s" % (lang, name))

    def list_code_envs(self, req):
        want = req.arg("envLang")
        if want:
            want = want.upper()
            if want not in ("PYTHON", "R"):
                raise bad_request("Unknown code env language: %s (PYTHON or R)"
                                  % req.arg("envLang"))
        out = []
        for (lang, name), s in self.inst.code_envs.items():
            if want and lang != want:
                continue
            item = {"envLang": lang, "envName": name,
                    "deploymentMode": s.get("deploymentMode", "DESIGN_MANAGED")}
            desc = s.get("desc") or {}
            for k in ("owner", "pythonInterpreter", "condaEnvironment"):
                if k in desc:
                    item[k] = desc[k]
            out.append(item)
        return out

    def get_code_env(self, req):
        return self.code_env(req)[2]

    def put_code_env(self, req):
        lang, name, old = self.code_env(req)
        body = req.json()
        _ident_check(body, {"envLang": lang, "envName": name})
        self.inst.code_envs[(lang, name)] = body
        return body

    # --- plugins --------------------------------------------------------------------------------

    def plugin(self, req):
        pid = req.params["PL"]
        try:
            return pid, self.inst.plugins[pid]
        except KeyError:
            raise ApiError(404, ERR_NOT_FOUND, "Plugin not installed: %s" % pid)

    def dev_plugin(self, req):
        pid, pl = self.plugin(req)
        if not pl["isDev"]:
            raise bad_request("Plugin %s is not a dev plugin: its files cannot be listed or "
                              "edited" % pid)
        return pid, pl["files"]

    def list_plugins(self, req):
        out = []
        for pid, pl in self.inst.plugins.items():
            desc = pl["desc"]
            meta = desc.get("meta") or {}
            out.append({"id": pid, "version": desc.get("version", "0.0.1"),
                        "isDev": pl["isDev"],
                        "meta": {k: meta[k] for k in ("label", "description", "icon", "author",
                                                      "tags") if k in meta}})
        return out

    def check_plugin_project(self, req):
        if req.arg("projectKey"):
            raise bad_request("Project-level plugin settings are not emulated")

    def get_plugin_settings(self, req):
        self.check_plugin_project(req)
        return self.secrets.hide(self.plugin(req)[1]["settings"])

    def post_plugin_settings(self, req):
        self.check_plugin_project(req)
        pid, pl = self.plugin(req)
        pl["settings"] = self.secrets.reveal(req.json())
        return self.msg("Settings of plugin %s saved" % pid)

    def get_plugin_contents(self, req):
        pid, files = self.dev_plugin(req)
        return self.library_children(files, "")

    def get_plugin_file(self, req):
        pid, files = self.dev_plugin(req)
        path = plugin_path(req.params["path"])
        if path in files.library_dirs:
            raise bad_request("Plugin path %s is a folder" % path)
        if path not in files.library:
            raise not_found("plugin file", pid, path)
        data = files.library[path][0]
        return RawResponse(data, library_mime(path, data))

    def put_plugin_file(self, req):
        pid, files = self.dev_plugin(req)
        path = plugin_path(req.params["path"])
        if path in files.library_dirs:
            raise bad_request("Plugin path %s is a folder" % path)
        now = self.now_ms()
        self.library_mkdirs(files, path.rpartition("/")[0], now)
        files.library[path] = [req.body if isinstance(req.body, bytes) else b"", now]
        return self.msg("File %s of plugin %s saved" % (path, pid))

    def delete_plugin_path(self, req):
        pid, files = self.dev_plugin(req)
        path = plugin_path(req.params["path"])
        if path not in files.library and path not in files.library_dirs:
            raise not_found("plugin file", pid, path)
        for table in (files.library, files.library_dirs):
            for k in [k for k in table if k == path or k.startswith(path + "/")]:
                del table[k]
        return self.msg("Path %s of plugin %s deleted" % (path, pid))

    def add_plugin_folder(self, req):
        pid, files = self.dev_plugin(req)
        path = plugin_path(req.params["path"])
        self.library_mkdirs(files, path, self.now_ms())
        return self.msg("Folder %s of plugin %s created" % (path, pid))

    def rename_plugin_path(self, req):
        pid, files = self.dev_plugin(req)
        body = req.json()
        old, name = body.get("oldPath"), body.get("newName")
        if not isinstance(old, str) or not isinstance(name, str) or not name \
                or "/" in name or name in (".", ".."):
            raise bad_request("rename needs 'oldPath' and a 'newName' without '/'")
        old = plugin_path(old)
        parent = old.rpartition("/")[0]
        return self.library_move(files, old, (parent + "/" if parent else "") + name,
                                 kind="plugin file")

    def move_plugin_path(self, req):
        pid, files = self.dev_plugin(req)
        body = req.json()
        old, dest = body.get("oldPath"), body.get("newPath")
        if not isinstance(old, str) or not isinstance(dest, str):
            raise bad_request("move needs 'oldPath' and 'newPath' (the destination folder)")
        old = plugin_path(old)
        dest = plugin_path(dest, allow_root=True)
        name = old.rsplit("/", 1)[-1]
        return self.library_move(files, old, (dest + "/" if dest else "") + name,
                                 kind="plugin file")

    # --- project folders ------------------------------------------------------------------------

    def project_folder(self, fid):
        try:
            return self.inst.folders[fid]
        except KeyError:
            raise _instance_not_found("Project folder", fid)

    def folder_view(self, f, user):
        out = {"id": f["id"]}
        if f["id"] != "ROOT":
            out["name"] = f.get("name", f["id"])
            out["parentId"] = f.get("parentId") or "ROOT"
        out["childrenIds"] = [c["id"] for c in self.inst.folders.values()
                              if c["id"] != "ROOT" and (c.get("parentId") or "ROOT") == f["id"]]
        out["projectKeys"] = [k for k in self.folder_projects(f["id"])
                              if user.level(k) >= LEVELS["read"]]
        return out

    def folder_projects(self, fid):
        """Keys of the projects in folder fid (a project no folder names is in ROOT)."""
        if fid != "ROOT":
            return [k for k in self.inst.folders[fid]["projectKeys"] if k in self.projects]
        placed = {k for f in self.inst.folders.values() if f["id"] != "ROOT"
                  for k in f["projectKeys"]}
        return [k for k in self.projects if k not in placed]

    def get_project_folder(self, req):
        return self.folder_view(self.project_folder(req.params["F"]), req.user)

    def get_project_folder_settings(self, req):
        f = self.project_folder(req.params["F"])
        if f["id"] == "ROOT":
            raise bad_request("The root project folder has no settings")
        return {"name": f.get("name", f["id"]), "owner": f.get("owner", "admin"),
                "permissions": f.get("permissions", [])}

    def put_project_folder_settings(self, req):
        f = self.project_folder(req.params["F"])
        if f["id"] == "ROOT":
            raise bad_request("The root project folder has no settings")
        body = req.json()
        name = body.get("name", f.get("name"))
        if not isinstance(name, str) or not name.strip():
            raise bad_request("A project folder needs a non-empty 'name'")
        parent = f.get("parentId") or "ROOT"
        for other in self.inst.folders.values():
            if other is not f and other["id"] != "ROOT" \
                    and (other.get("parentId") or "ROOT") == parent and other.get("name") == name:
                raise bad_request("A project folder named '%s' already exists there" % name)
        if "permissions" in body and not isinstance(body["permissions"], list):
            raise bad_request("'permissions' must be a list")
        f["name"] = name
        f["owner"] = body.get("owner", f.get("owner"))
        f["permissions"] = body.get("permissions", f.get("permissions", []))
        return self.msg("Project folder %s saved" % f["id"])

    def locate_project(self, req):
        p = self.project(req)
        for f in self.inst.folders.values():
            if f["id"] != "ROOT" and p.key in f["projectKeys"]:
                return self.folder_view(f, req.user)
        return self.folder_view(self.inst.folders["ROOT"], req.user)

    # --- clusters, meanings -----------------------------------------------------------------

    def cluster(self, req):
        try:
            return self.inst.clusters[req.params["CL"]]
        except KeyError:
            raise _instance_not_found("Cluster", req.params["CL"])

    def list_clusters(self, req):
        return [{"id": cid, "name": c.get("name", cid), "type": c.get("type"),
                 "architecture": c.get("architecture"), "state": "NONE"}
                for cid, c in self.inst.clusters.items()]

    def get_cluster(self, req):
        return self.secrets.hide(self.cluster(req))

    def put_cluster(self, req):
        cid = req.params["CL"]
        self.cluster(req)
        body = req.json()
        _ident_check(body, {"id": cid})
        self.inst.clusters[cid] = self.secrets.reveal(body)
        return self.secrets.hide(self.inst.clusters[cid])

    def get_cluster_status(self, req):
        self.cluster(req)
        return {"state": "NONE"}

    def meaning(self, req):
        try:
            return self.inst.meanings[req.params["M"]]
        except KeyError:
            raise _instance_not_found("Meaning", req.params["M"])

    def list_meanings(self, req):
        return [{"id": mid, "label": m.get("label", mid), "type": m.get("type"),
                 "description": m.get("description", "")}
                for mid, m in self.inst.meanings.items()]

    def get_meaning(self, req):
        return self.meaning(req)

    def put_meaning(self, req):
        mid = req.params["M"]
        self.meaning(req)
        body = req.json()
        _ident_check(body, {"id": mid})
        self.inst.meanings[mid] = with_identity({"id": mid}, body)
        return self.inst.meanings[mid]

    # --- what the control endpoint shows ------------------------------------------------------

    def secret_dump(self):
        """Every real (cleartext) secret of the instance, by object (GET /__emulator__/secrets)."""
        inst = self.inst
        return {
            "connections": {n: SecretBox.dump(c) for n, c in inst.connections.items()},
            "users": {l: SecretBox.dump(u) for l, u in inst.users.items()},
            "passwords": dict(inst.passwords),
            "general-settings": SecretBox.dump(inst.general_settings),
            "plugins": {pid: SecretBox.dump(pl["settings"]) for pid, pl in inst.plugins.items()},
            "clusters": {cid: SecretBox.dump(c) for cid, c in inst.clusters.items()},
        }


def _summary_keys(obj, keys):
    return {k: obj[k] for k in keys if k in obj}


# ---------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------

class Request:
    """What a route handler gets."""

    __slots__ = ("method", "params", "query", "body", "user", "headers")

    def __init__(self, method, params, query, body, user, headers=None):
        self.headers = headers or {}
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
    """A ROUTES entry. A last pattern part ``{name*}`` takes one or more segments,
    joined by "/". Handler "name arg" calls State.name(req, "arg"). Flag "stream": the
    body is a BodyReader and the handler runs without the state lock."""

    __slots__ = ("method", "parts", "access", "handler_name", "arg", "stream", "rest")

    def __init__(self, method, pattern, access, handler_name, flags=""):
        self.method = method
        self.parts = tuple(pattern.split("/"))
        self.access = access
        self.handler_name, _, self.arg = handler_name.partition(" ")
        self.stream = "stream" in flags
        self.rest = self.parts[-1].endswith("*}")

    def bind(self, segs):
        params = {}
        if self.rest:
            if len(segs) < len(self.parts):
                return None
            segs = list(segs[:len(self.parts) - 1]) + ["/".join(segs[len(self.parts) - 1:])]
        elif len(segs) != len(self.parts):
            return None
        for part, seg in zip(self.parts, segs):
            if part.startswith("{"):
                params[part[1:-1].rstrip("*")] = seg
            elif part != seg:
                return None
        return params


class Router:
    def __init__(self, table):
        self.by_length = {}
        self.rest = []
        for method, pattern, access, handler, *flags in table:
            route = Route(method, pattern, access, handler, *flags)
            if route.rest:
                self.rest.append(route)
            else:
                self.by_length.setdefault(len(route.parts), []).append(route)

    def is_stream(self, method, segs):
        try:
            return self.match(method, segs)[0].stream
        except ApiError:
            return False

    def match(self, method, segs):
        allowed = []
        for route in self.by_length.get(len(segs), []) + self.rest:
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
# key; DSS_ADMIN = an instance admin key (--api-key); "read"/"write"/"admin" = that level
# on project {K}.
ROUTES = (
    ("GET", "instance-info", "instance", "get_instance_info"),
    ("GET", "projects", "instance", "list_projects"),

    # --- instance scope (any key unless DSS_ADMIN) ---
    ("GET", "users", "instance", "list_users_info"),
    ("GET", "users/{L}", "instance", "get_user_info"),
    ("GET", "groups", "instance", "list_groups_info"),
    ("GET", "current-user", "instance", "get_current_user"),
    ("PUT", "current-user", "instance", "put_current_user"),
    ("GET", "admin/users", DSS_ADMIN, "admin_list_users"),
    ("GET", "admin/users/{L}", DSS_ADMIN, "admin_get_user"),
    ("PUT", "admin/users/{L}", DSS_ADMIN, "admin_put_user"),
    ("GET", "admin/groups", DSS_ADMIN, "admin_list_groups"),
    ("GET", "admin/groups/{G}", DSS_ADMIN, "admin_get_group"),
    ("PUT", "admin/groups/{G}", DSS_ADMIN, "admin_put_group"),
    ("GET", "admin/connections", DSS_ADMIN, "admin_list_connections"),
    ("GET", "admin/connections/{C}", DSS_ADMIN, "admin_get_connection"),
    ("PUT", "admin/connections/{C}", DSS_ADMIN, "admin_put_connection"),
    ("GET", "connections/get-names", "instance", "connection_names"),
    ("GET", "admin/general-settings", DSS_ADMIN, "get_general_settings"),
    ("PUT", "admin/general-settings", DSS_ADMIN, "put_general_settings"),
    ("GET", "admin/variables", DSS_ADMIN, "get_global_variables"),
    ("PUT", "admin/variables", DSS_ADMIN, "put_global_variables"),
    ("GET", "admin/code-envs", DSS_ADMIN, "list_code_envs"),
    ("GET", "admin/code-envs/{LANG}/{E}", DSS_ADMIN, "get_code_env"),
    ("PUT", "admin/code-envs/{LANG}/{E}", DSS_ADMIN, "put_code_env"),
    ("GET", "admin/clusters", DSS_ADMIN, "list_clusters"),
    ("GET", "admin/clusters/{CL}", DSS_ADMIN, "get_cluster"),
    ("PUT", "admin/clusters/{CL}", DSS_ADMIN, "put_cluster"),
    ("GET", "admin/clusters/{CL}/status", DSS_ADMIN, "get_cluster_status"),
    ("GET", "meanings", "instance", "list_meanings"),
    ("GET", "meanings/{M}", "instance", "get_meaning"),
    ("PUT", "meanings/{M}", DSS_ADMIN, "put_meaning"),
    ("GET", "plugins", "instance", "list_plugins"),
    ("GET", "plugins/{PL}/settings", DSS_ADMIN, "get_plugin_settings"),
    ("POST", "plugins/{PL}/settings", DSS_ADMIN, "post_plugin_settings"),
    ("GET", "plugins/{PL}/contents", DSS_ADMIN, "get_plugin_contents"),
    ("GET", "plugins/{PL}/contents/{path*}", DSS_ADMIN, "get_plugin_file"),
    ("POST", "plugins/{PL}/contents/{path*}", DSS_ADMIN, "put_plugin_file"),
    ("DELETE", "plugins/{PL}/contents/{path*}", DSS_ADMIN, "delete_plugin_path"),
    ("POST", "plugins/{PL}/folders/{path*}", DSS_ADMIN, "add_plugin_folder"),
    ("POST", "plugins/{PL}/contents-actions/rename", DSS_ADMIN, "rename_plugin_path"),
    ("POST", "plugins/{PL}/contents-actions/move", DSS_ADMIN, "move_plugin_path"),
    ("GET", "project-folders/locate-project/{K}", "read", "locate_project"),
    ("GET", "project-folders/{F}", "instance", "get_project_folder"),
    ("GET", "project-folders/{F}/settings", DSS_ADMIN, "get_project_folder_settings"),
    ("PUT", "project-folders/{F}/settings", DSS_ADMIN, "put_project_folder_settings"),
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
    ("GET", "projects/{K}/datasets/{N}/data", "read", "get_dataset_data", "stream"),
    ("GET", "projects/{K}/datasets/{N}/finish-streaming", "read", "finish_streaming"),

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
    ("GET", "projects/{K}/scenarios/{S}/get-runs-by-date", "read", "get_runs_by_date"),
    ("GET", "projects/{K}/scenarios/{S}/get-run-for-trigger", "read", "get_run_for_trigger"),
    ("POST", "projects/{K}/scenarios/{S}/run", "write", "run_scenario"),
    ("POST", "projects/{K}/scenarios/{S}/abort", "write", "abort_scenario"),
    ("GET", "projects/{K}/scenarios/trigger/{S}/{T}", "read", "get_trigger_fire"),
    # after the literal routes above: a run id is any other segment
    ("GET", "projects/{K}/scenarios/{S}/{RUN}", "read", "get_scenario_run"),
    ("GET", "projects/{K}/scenarios/{S}/{RUN}/log", "read", "get_scenario_run_log"),

    ("GET", "projects/{K}/jobs", "read", "list_jobs"),
    ("POST", "projects/{K}/jobs", "write", "start_job"),
    ("GET", "projects/{K}/jobs/{J}", "read", "get_job"),
    ("GET", "projects/{K}/jobs/{J}/log", "read", "get_job_log"),
    ("POST", "projects/{K}/jobs/{J}/abort", "write", "abort_job"),

    ("GET", "projects/{K}/git/status", "read", "git_status"),
    ("GET", "projects/{K}/git/branches", "read", "git_branches"),
    ("GET", "projects/{K}/git/current-branch", "read", "git_current_branch"),
    ("GET", "projects/{K}/git/tags", "read", "git_tags"),
    ("GET", "projects/{K}/git/actions/log", "read", "git_log"),
    ("GET", "projects/{K}/git/actions/diff", "read", "git_diff"),
    ("POST", "projects/{K}/git/actions/commit", "write", "git_commit"),

    ("GET", "projects/{K}/wiki", "read", "get_wiki"),
    ("PUT", "projects/{K}/wiki", "write", "put_wiki"),
    ("GET", "projects/{K}/wiki/{A}", "read", "get_article"),
    ("PUT", "projects/{K}/wiki/{A}", "write", "put_article"),

    ("GET", "projects/{K}/savedmodels", "read", "list_objects saved_models"),
    ("GET", "projects/{K}/savedmodels/{I}", "read", "get_object saved_models"),
    ("PUT", "projects/{K}/savedmodels/{I}", "write", "save_object saved_models"),
    ("GET", "projects/{K}/savedmodels/{I}/versions", "read", "list_saved_model_versions"),

    ("GET", "projects/{K}/managedfolders", "read", "list_objects managed_folders"),
    ("GET", "projects/{K}/managedfolders/{I}", "read", "get_object managed_folders"),
    ("PUT", "projects/{K}/managedfolders/{I}", "write", "save_object managed_folders"),
    ("GET", "projects/{K}/managedfolders/{I}/contents", "read", "list_folder_contents"),
    ("GET", "projects/{K}/managedfolders/{I}/contents/{path*}", "read", "get_folder_file"),
    ("POST", "projects/{K}/managedfolders/{I}/contents/{path*}", "write",
     "upload_folder_file", "stream"),
    ("DELETE", "projects/{K}/managedfolders/{I}/contents/{path*}", "write",
     "delete_folder_file"),

    ("GET", "projects/{K}/libraries/contents", "read", "get_library"),
    ("GET", "projects/{K}/libraries/contents/{path*}", "read", "get_library_file"),
    ("POST", "projects/{K}/libraries/contents/{path*}", "write", "put_library_file"),
    ("DELETE", "projects/{K}/libraries/contents/{path*}", "write", "delete_library_path"),
    ("POST", "projects/{K}/libraries/folders/{path*}", "write", "add_library_folder"),
    ("POST", "projects/{K}/libraries/contents-actions/rename", "write", "rename_library_path"),
    ("POST", "projects/{K}/libraries/contents-actions/move", "write", "move_library_path"),

    ("GET", "projects/{K}/dashboards", "read", "list_objects dashboards"),
    ("GET", "projects/{K}/dashboards/{I}", "read", "get_object dashboards"),
    ("PUT", "projects/{K}/dashboards/{I}", "write", "save_object dashboards"),
    ("GET", "projects/{K}/insights", "read", "list_objects insights"),
    ("GET", "projects/{K}/insights/{I}", "read", "get_object insights"),
    ("POST", "projects/{K}/insights/{I}", "write", "save_insight"),
    ("GET", "projects/{K}/flow/zones", "read", "list_objects zones"),
    ("GET", "projects/{K}/flow/zones/{I}", "read", "get_object zones"),
    ("PUT", "projects/{K}/flow/zones/{I}", "write", "save_object zones"),
    ("GET", "projects/{K}/webapps", "read", "list_objects webapps"),
    ("GET", "projects/{K}/webapps/{I}", "read", "get_object webapps"),
    ("PUT", "projects/{K}/webapps/{I}", "write", "save_object webapps"),
    ("GET", "projects/{K}/evaluationstores", "read", "list_objects evaluation_stores"),
    ("GET", "projects/{K}/evaluationstores/{I}", "read", "get_object evaluation_stores"),
    ("PUT", "projects/{K}/evaluationstores/{I}", "write", "save_object evaluation_stores"),
    ("GET", "projects/{K}/evaluationstores/{I}/evaluations", "read", "list_evaluations"),
    ("GET", "projects/{K}/apiservices", "read", "list_objects api_services"),
    ("GET", "projects/{K}/apiservices/{I}/settings", "read", "get_object api_services"),
    ("PUT", "projects/{K}/apiservices/{I}/settings", "write", "save_object api_services"),
    ("GET", "projects/{K}/datasets/{N}/statistics/worksheets", "read", "list_worksheets"),
    ("GET", "projects/{K}/datasets/{N}/statistics/worksheets/{I}", "read", "get_worksheet"),
    ("PUT", "projects/{K}/datasets/{N}/statistics/worksheets/{I}", "write",
     "save_worksheet"),
    ("GET", "projects/{K}/evaluationcomparisons", "read", "list_comparisons"),
    ("GET", "projects/{K}/evaluationcomparisons/{I}", "read", "get_comparison"),
    ("PUT", "projects/{K}/evaluationcomparisons/{I}", "write", "save_comparison"),
    ("GET", "projects/{K}/code-studios", "read", "list_objects code_studios"),
    ("GET", "projects/{K}/code-studios/{I}", "read", "get_object code_studios"),
    ("GET", "projects/{K}/knowledge-banks", "read", "list_objects knowledge_banks"),
    ("GET", "projects/{K}/knowledge-banks/{I}", "read", "get_object knowledge_banks"),
    ("PUT", "projects/{K}/knowledge-banks/{I}", "write", "save_object knowledge_banks"),
    ("GET", "projects/{K}/agents/tools", "read", "list_agent_tools"),
    ("GET", "projects/{K}/agents/tools/{I}", "read", "get_object agent_tools"),
    ("PUT", "projects/{K}/agents/tools/{I}", "write", "save_object agent_tools"),

    ("GET", "projects/{K}/sql-notebooks", "read", "list_sql_notebooks"),
    ("GET", "projects/{K}/sql-notebooks/{I}", "read", "get_sql_notebook"),
    ("PUT", "projects/{K}/sql-notebooks/{I}", "write", "save_sql_notebook"),
    ("GET", "projects/{K}/sql-notebooks/{I}/history", "read", "get_sql_history"),
    ("PUT", "projects/{K}/sql-notebooks/{I}/history", "write", "put_sql_history"),
    ("GET", "projects/{K}/jupyter-notebooks", "read", "list_jupyter"),
    ("GET", "projects/{K}/jupyter-notebooks/{I}", "read", "get_jupyter"),
    ("PUT", "projects/{K}/jupyter-notebooks/{I}", "write", "put_jupyter"),
    ("GET", "projects/{K}/lab", "read", "list_analyses"),
    ("GET", "projects/{K}/lab/{I}", "read", "get_analysis"),
    ("PUT", "projects/{K}/lab/{I}", "write", "put_analysis"),
    ("GET", "projects/{K}/lab/{I}/models", "read", "list_ml_tasks"),
    ("GET", "projects/{K}/models/lab/{I}/{T}/settings", "read", "get_ml_task"),
    ("POST", "projects/{K}/models/lab/{I}/{T}/settings", "write", "save_ml_task"),
)


# ---------------------------------------------------------------------------------------
# The API itself: state + handlers (all called with State.lock held)
# ---------------------------------------------------------------------------------------

class State(InstanceHandlers):
    """The emulated instance. Every handler runs with ``self.lock`` held."""

    def __init__(self, projects, node_type="DESIGN", instance=None):
        self.lock = threading.RLock()
        self.inst = instance if instance is not None else minimal_instance()
        self.secrets = SecretBox()
        self.projects = {}
        for p in projects:
            if p.key in self.projects:
                raise SystemExit("dss_emulator: project %s loaded twice" % p.key)
            self.projects[p.key] = p
        self.files = FolderStore()
        for p in self.projects.values():
            for fid, source in p.folder_seeds.items():
                self.files.seed(p.key, fid, source)
        self.node_type = node_type
        self._last_ms = 0
        self.activities = {}     # project key -> Activity (runs, jobs, git), made on use
        self.data_rows = {}      # --dataset-rows: "K.NAME" / "NAME" / "*" -> rows
        self.data_sizes = {}     # dataset data stream spec -> its size in bytes

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
        out = dict(self.inst.info)
        out["nodeType"] = self.node_type
        return out

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

    # --- activity: scenario runs, jobs, git history, dataset rows ---------------------------

    def activity(self, p):
        """The project's runtime data, made (deterministically) on first use."""
        act = self.activities.get(p.key)
        if act is None:
            act = self.activities[p.key] = demo_activity(p)
        return act

    def git_prepare(self, route, params):
        """Before a write on project {K}: its history must start from the loaded state."""
        p = self.projects.get(params.get("K")) if route.access in ("write", "admin") else None
        if p is not None and route.method != "GET":
            self.activity(p)
            return p
        return None

    def git_record(self, p, login):
        """After an accepted write: a commit if the project's files changed."""
        act = self.activity(p)
        return apply_commit(act, p.key, login, self.now_ms(), project_files(p))

    def run_record(self, req):
        p, s = self.scenario(req)
        rid = req.params["RUN"]
        for rec in self.activity(p).runs.get(s["id"], []):
            if rec["run"]["runId"] == rid:
                return p, s, rec
        raise not_found("scenario run", p.key, "%s.%s" % (s["id"], rid))

    def get_last_runs(self, req):
        p, s = self.scenario(req)
        limit = req.int_arg("limit", 10)
        req.bool_arg("onlyFinishedRuns")   # every run is finished
        runs = self.activity(p).runs.get(s["id"], [])
        return [r["run"] for r in runs[:max(0, limit)]]

    def get_runs_by_date(self, req):
        p, s = self.scenario(req)

        def day(name, default):
            value = req.arg(name)
            if value is None:
                return default
            try:
                return calendar.timegm(time.strptime(value, "%Y-%m-%d")) * 1000
            except ValueError:
                raise bad_request("Invalid date for parameter %s: %s (YYYY-MM-DD)"
                                  % (name, value))
        lo, hi = day("fromDate", 0), day("toDate", 1 << 62)
        return [r["run"] for r in self.activity(p).runs.get(s["id"], [])
                if lo <= r["run"]["start"] < hi]

    def get_scenario_run(self, req):
        _p, _s, rec = self.run_record(req)
        return {"scenarioRun": rec["run"], "stepRuns": rec["stepRuns"]}

    def get_scenario_run_log(self, req):
        p, s, rec = self.run_record(req)
        step = req.arg("stepId")
        if step is None or step == "":
            return RawResponse(rec["log"].encode("utf-8"), "text/plain; charset=utf-8")
        if step not in rec["stepLogs"]:
            raise not_found("scenario step", p.key, "%s.%s" % (s["id"], step))
        return RawResponse(rec["stepLogs"][step].encode("utf-8"), "text/plain; charset=utf-8")

    def run_scenario(self, req):
        p, s = self.scenario(req)
        params = req.json() if req.body.strip() else {}
        act = self.activity(p)
        start = self.now_ms()
        trigger = {"id": "manual", "type": "manual", "name": "Manual trigger (API)"}
        rec = ActivityMaker(p, act).run(s, start, req.user.login, trigger)
        self._last_ms = max(self._last_ms, rec["run"]["end"])
        fire = {"projectKey": p.key, "scenarioId": s["id"], "trigger": trigger,
                "runId": "manual-%d" % start, "cancelled": False, "params": params,
                "triggerAuthCtx": {"authIdentifier": req.user.login}}
        act.fires[(s["id"], fire["runId"])] = (fire, rec["run"]["runId"])
        while len(act.fires) > RUNS_KEPT * max(1, len(p.scenarios)):
            del act.fires[next(iter(act.fires))]      # the oldest fire
        return fire

    def fire(self, req, p, sid):
        trig = req.arg("triggerRunId")
        try:
            return self.activity(p).fires[(sid, trig)]
        except KeyError:
            raise not_found("trigger fire", p.key, "%s.%s" % (sid, trig))

    def get_trigger_fire(self, req):
        p, s = self.scenario(req)
        fire, _rid = self.fire(req, p, s["id"])
        if req.params["T"] != fire["trigger"]["id"]:
            raise not_found("trigger", p.key, "%s.%s" % (s["id"], req.params["T"]))
        return fire

    def get_run_for_trigger(self, req):
        p, s = self.scenario(req)
        fire, rid = self.fire(req, p, s["id"])
        for rec in self.activity(p).runs.get(s["id"], []):
            if rec["run"]["runId"] == rid:
                return {"scenarioRun": rec["run"]}
        return {}      # the run is no longer kept

    def abort_scenario(self, req):
        p, s = self.scenario(req)
        return self.msg("Scenario %s.%s is not running" % (p.key, s["id"]))

    # jobs

    @staticmethod
    def job_view(job):
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def job(self, req):
        p = self.project(req)
        jid = req.params["J"]
        for job in self.activity(p).jobs:
            if job["def"]["id"] == jid:
                return p, job
        raise not_found("job", p.key, jid)

    def list_jobs(self, req):
        return [self.job_view(j) for j in self.activity(self.project(req)).jobs]

    def get_job(self, req):
        return self.job_view(self.job(req)[1])

    def get_job_log(self, req):
        p, job = self.job(req)
        activity = req.arg("activity")
        if activity:
            if activity not in job["_logs"]:
                raise not_found("job activity", p.key, "%s.%s" % (job["def"]["id"], activity))
            text = job["_logs"][activity]
        else:
            text = job["_log"]
        return RawResponse(text.encode("utf-8"), "text/plain; charset=utf-8")

    def abort_job(self, req):
        p, job = self.job(req)
        return self.msg("Job %s.%s is not running (%s)"
                        % (p.key, job["def"]["id"], job["baseStatus"]["state"]))

    def start_job(self, req):
        p = self.project(req)
        body = req.json()
        jtype = body.get("type", "NON_RECURSIVE_FORCED_BUILD")
        if jtype not in JOB_TYPES:
            raise bad_request("Unknown job type: %s (one of %s)" % (jtype, ", ".join(JOB_TYPES)))
        outputs = body.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            raise bad_request("A job needs 'outputs': a non-empty list of {type, id}")
        clean = []
        for o in outputs:
            if not isinstance(o, dict) or not isinstance(o.get("id"), str):
                raise bad_request("Each job output needs an 'id' string")
            otype = o.get("type") or "DATASET"
            if otype not in JOB_OUTPUT_TYPES:
                raise bad_request("Unknown output type: %s" % otype)
            okey = o.get("projectKey") or p.key
            if okey != p.key:
                raise bad_request("Cannot build %s.%s from project %s (emulator: outputs "
                                  "must be in the job's project)" % (okey, o["id"], p.key))
            table = {"DATASET": (p.datasets, "dataset"),
                     "MANAGED_FOLDER": (p.managed_folders, "managed folder"),
                     "SAVED_MODEL": (p.saved_models, "saved model")}.get(otype)
            if table is not None and o["id"] not in table[0]:
                raise not_found(table[1], p.key, o["id"])
            clean.append({"type": otype, "id": o["id"], "projectKey": p.key,
                          "partition": o.get("partition")})
        job = ActivityMaker(p, self.activity(p)).job(clean, jtype, req.user.login,
                                                     self.now_ms())
        self._last_ms = max(self._last_ms, job["baseStatus"]["jobEndTime"])
        return job["def"]

    # git

    def commit_rec(self, act, p, cid, name):
        for rec in act.commits:
            if rec["entry"]["commit"] == cid:
                return rec
        raise ApiError(404, ERR_NOT_FOUND, "Commit not found in project %s: %s=%s"
                       % (p.key, name, cid))

    def git_status(self, req):
        p = self.project(req)
        self.activity(p)
        return {"currentBranch": GIT_BRANCH, "remotes": [],
                "trackingCount": {"ahead": 0, "behind": 0}, "clean": True,
                "hasUncommittedChanges": False, "added": [], "changed": [], "removed": [],
                "missing": [], "modified": [], "conflicting": [], "untracked": [],
                "untrackedFolders": []}

    def git_branches(self, req):
        self.project(req)
        return [] if req.bool_arg("remote") else [GIT_BRANCH]

    def git_current_branch(self, req):
        self.project(req)
        return {"name": GIT_BRANCH}

    def git_tags(self, req):
        self.project(req)
        return []

    def git_log(self, req):
        p = self.project(req)
        act = self.activity(p)
        count = req.int_arg("count", 1000)
        if count <= 0:
            raise bad_request("count must be positive: %d" % count)
        commits = act.commits
        start = req.arg("startCommit")
        if start:
            rec = self.commit_rec(act, p, start, "startCommit")
            commits = commits[commits.index(rec):]
        path = (req.arg("path") or "").strip("/")
        if path:
            commits = [c for c in commits if any(f == path or f.startswith(path + "/")
                                                 for f in c["changed"])]
        out = {"entries": [dict(c["entry"]) for c in commits[:count]]}
        if len(commits) > count:
            out["nextCommit"] = commits[count]["entry"]["commit"]
        return out

    def git_diff(self, req):
        p = self.project(req)
        act = self.activity(p)
        frm, to = req.arg("commitFrom"), req.arg("commitTo")
        if not frm and to:
            raise bad_request("commitTo needs commitFrom")
        if not frm:                       # working copy vs HEAD: every write is committed
            head = act.commits[0]
            a_rec, b_rec, a_files, b_files = head, None, head["files"], project_files(p)
        elif not to:                      # the changes made by one commit
            b_rec = self.commit_rec(act, p, frm, "commitFrom")
            a_rec = self.commit_rec(act, p, b_rec["parent"], "parent") \
                if b_rec["parent"] else None
            a_files, b_files = (a_rec["files"] if a_rec else {}), b_rec["files"]
        else:
            a_rec = self.commit_rec(act, p, frm, "commitFrom")
            b_rec = self.commit_rec(act, p, to, "commitTo")
            a_files, b_files = a_rec["files"], b_rec["files"]
        entries = tree_diff(a_files, b_files)
        return {"commitFrom": dict(a_rec["entry"]) if a_rec else {},
                "commitTo": dict(b_rec["entry"]) if b_rec else {},
                "addedLines": sum(e["addedLines"] for e in entries),
                "removedLines": sum(e["removedLines"] for e in entries),
                "changedFiles": len(entries), "entries": entries}

    def git_commit(self, req):
        self.project(req)
        body = req.json()
        if not isinstance(body.get("message"), str):
            raise bad_request("A commit needs a 'message' string")
        return {"success": True, "output": "nothing to commit, working tree clean"}

    # dataset rows

    def get_dataset_data(self, req):
        """Streamed rows (runs without the state lock, like uploads: a big dataset
        must not block other requests while its size is computed)."""
        with self.lock:
            p, ds = self.dataset(req)
            cols = [(c.get("name"), c.get("type"), k == 0) for k, c in
                    enumerate((ds.get("schema") or {}).get("columns") or [])
                    if isinstance(c, dict)]
            all_parts = dataset_partitions(p.key, ds)
            n = dataset_row_count(p.key, ds["name"], self.data_rows)
        fmt = req.arg("format") or "tsv-excel-noheader"
        formats = {"tsv-excel-noheader": (False, "\t", "text/tab-separated-values"),
                   "tsv-excel-header": (True, "\t", "text/tab-separated-values"),
                   "csv": (True, ",", "text/csv")}
        if fmt not in formats:
            raise bad_request("Unsupported format: %s (emulator: %s)"
                              % (fmt, ", ".join(formats)))
        header, sep, ctype = formats[fmt]
        wanted = [c for v in req.query.get("columns", []) for c in v.split(",") if c]
        if wanted:
            by_name = {c[0]: c for c in cols}
            missing = [c for c in wanted if c not in by_name]
            if missing:
                raise bad_request("Unknown column(s) in %s.%s: %s"
                                  % (p.key, ds["name"], ", ".join(missing)))
            cols = [by_name[c] for c in wanted]
        parts = [x for v in req.query.get("partitions", []) for x in v.split(",") if x]
        if parts:
            unknown = [x for x in parts if x not in all_parts and x not in ("NP", "ALL")]
            if unknown:
                raise not_found("partition", p.key, "%s.%s" % (ds["name"], unknown[0]))
            if "ALL" in parts:
                parts = all_parts
        else:
            parts = all_parts
        limit = None
        if req.arg("sampling"):
            try:
                sampling = json.loads(req.arg("sampling"))
            except ValueError:
                raise bad_request("sampling is not JSON: %s" % req.arg("sampling"))
            if isinstance(sampling, dict) and isinstance(sampling.get("maxRecords"), int) \
                    and sampling.get("samplingMethod", "HEAD_SEQUENTIAL") != "FULL" \
                    and sampling["maxRecords"] >= 0:
                limit = sampling["maxRecords"]
        if req.arg("limit") is not None:
            lim = req.int_arg("limit", -1)
            if lim >= 0:
                limit = lim if limit is None else min(limit, lim)
        spec = (p.key, ds["name"], cols, parts, n, header, sep, limit)
        size = self.data_sizes.get(repr(spec))
        if size is None:
            size = sum(len(c) for c in data_chunks(spec))
            with self.lock:
                if len(self.data_sizes) > 10_000:
                    self.data_sizes.clear()
                self.data_sizes[repr(spec)] = size
        return StreamResponse(RowStream(data_chunks(spec)), size,
                              ctype + "; charset=utf-8")

    def finish_streaming(self, req):
        self.dataset(req)
        return self.msg("Streaming session %s finished" % (req.arg("readSessionId") or ""))

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

    # --- objects stored one file each (OBJECT_KINDS) ---------------------------------------

    def obj(self, req, kind, key="I"):
        p = self.project(req)
        return p, self.lookup(p.objects[kind], OBJECT_KINDS[kind].label, p, req.params[key])

    def list_objects(self, req, kind):
        items = self.project(req).objects[kind].values()
        return [OBJECT_KINDS[kind].item(o) for o in items]

    def get_object(self, req, kind):
        return self.obj(req, kind)[1]

    def save_object(self, req, kind, body=None):
        """Whole replacement from a PUT (or POST) body; identity checked, tag bumped."""
        p, old = self.obj(req, kind)
        oid = req.params["I"]
        body = req.json() if body is None else body
        new = self.replaced(old, body, {"projectKey": p.key, "id": oid}, req.user.login,
                            OBJECT_KINDS[kind].tagged)
        p.objects[kind][oid] = new
        if OBJECT_KINDS[kind].put_answer == "object":
            return new
        return self.msg("%s %s.%s saved" % (OBJECT_KINDS[kind].label.capitalize(), p.key, oid))

    def replaced(self, old, body, ident, login, tagged=True):
        """replace() for types with or without versionTag."""
        if tagged:
            return self.replace(old, body, ident, login)
        for k, v in ident.items():
            if k in body and body[k] != v:
                raise bad_request("%s mismatch: body has %r but the URL says %r"
                                  % (k, body[k], v))
        return with_identity(ident, without(body, "versionTag", "creationTag"))

    def save_insight(self, req):
        """POST insights/{id}/ with {"insight": <whole settings>}."""
        body = req.json()
        if not isinstance(body.get("insight"), dict):
            raise bad_request("Insight save needs an 'insight' object")
        return self.save_object(req, "insights", body["insight"])

    def list_agent_tools(self, req):
        req.bool_arg("includeDescriptions")
        return {"tools": self.list_objects(req, "agent_tools")}

    def list_saved_model_versions(self, req):
        m = self.obj(req, "saved_models")[1]
        return [{"id": m.get("activeVersion", "initial"), "active": True}]

    def list_evaluations(self, req):
        self.obj(req, "evaluation_stores")
        return []

    def get_comparison(self, req):
        return comparison_view(self.obj(req, "comparisons")[1])

    def list_comparisons(self, req):
        wanted = set(req.query.get("modelTaskTypes") or ())
        return [i for i in self.list_objects(req, "comparisons")
                if not wanted or i.get("modelTaskType") in wanted]

    def save_comparison(self, req):
        return self.save_object(req, "comparisons", comparison_unview(req.json()))

    # --- statistics worksheets (addressed under their dataset) ----------------------------

    def worksheets_of(self, req):
        p, ds = self.dataset(req)
        names = (ds["name"], "%s.%s" % (p.key, ds["name"]))
        return p, {wid: w for wid, w in p.objects["worksheets"].items()
                   if ((w.get("dataSpec") or {}).get("inputDatasetSmartName")) in names}

    def list_worksheets(self, req):
        return [OBJECT_KINDS["worksheets"].item(w) for w in self.worksheets_of(req)[1].values()]

    def worksheet_check(self, req):
        p, mine = self.worksheets_of(req)
        if req.params["I"] not in mine:
            raise not_found("statistics worksheet", p.key, req.params["I"])

    def get_worksheet(self, req):
        self.worksheet_check(req)
        return self.get_object(req, "worksheets")

    def save_worksheet(self, req):
        self.worksheet_check(req)
        return self.save_object(req, "worksheets")

    # --- SQL notebooks ----------------------------------------------------------------------

    def sql_notebook(self, req):
        p = self.project(req)
        return p, self.lookup(p.sql_notebooks, "SQL notebook", p, req.params["I"])

    def list_sql_notebooks(self, req):
        out = []
        for n in self.project(req).sql_notebooks.values():
            item = _summary(n, "connection")
            item["language"] = n.get("language", "SQL")
            item["tags"] = n.get("tags", [])
            out.append(item)
        return out

    def get_sql_notebook(self, req):
        """The content; a cell without ``code`` gets the SQL of its latest run (DSS's
        stored cells lack it; see README)."""
        p, n = self.sql_notebook(req)
        history = p.sql_histories.get(n["id"], {})
        cells = n.get("cells")
        if not isinstance(cells, list):
            return n
        out = dict(n)
        out["cells"] = []
        for c in cells:
            runs = history.get(c.get("id")) if isinstance(c, dict) else None
            if isinstance(c, dict) and "code" not in c and runs:
                latest = max(runs, key=lambda r: r.get("runOn", 0) if isinstance(r, dict)
                             else 0)
                if isinstance(latest, dict) and isinstance(latest.get("sql"), str):
                    c = dict(c, code=latest["sql"])
            out["cells"].append(c)
        return out

    def save_sql_notebook(self, req):
        p, old = self.sql_notebook(req)
        nid = req.params["I"]
        p.sql_notebooks[nid] = self.replace(old, req.json(), {"projectKey": p.key, "id": nid},
                                            req.user.login)
        return p.sql_notebooks[nid]

    def get_sql_history(self, req):
        p, n = self.sql_notebook(req)
        return p.sql_histories.get(n["id"], {})

    def put_sql_history(self, req):
        p, n = self.sql_notebook(req)
        p.sql_histories[n["id"]] = req.json()
        return self.msg("History of SQL notebook %s.%s saved" % (p.key, n["id"]))

    # --- Jupyter notebooks ------------------------------------------------------------------

    def list_jupyter(self, req):
        p = self.project(req)
        out = []
        for name, nb in p.jupyter.items():
            md = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
            spec = md.get("kernelspec") if isinstance(md.get("kernelspec"), dict) else {}
            lang = spec.get("language") or (md.get("language_info") or {}).get("name")
            out.append({"projectKey": p.key, "id": name, "name": name, "language": lang,
                        "kernelSpec": spec})
        return out

    def get_jupyter(self, req):
        p = self.project(req)
        return self.lookup(p.jupyter, "notebook", p, req.params["I"])

    def put_jupyter(self, req):
        p = self.project(req)
        name = req.params["I"]
        self.lookup(p.jupyter, "notebook", p, name)
        body = req.json()
        if not isinstance(body.get("cells", []), list):
            raise bad_request("A notebook's 'cells' must be a list")
        p.jupyter[name] = body
        return self.msg("Notebook %s.%s saved" % (p.key, name))

    # --- visual analyses and ML tasks -------------------------------------------------------

    def analysis(self, req):
        p = self.project(req)
        return p, self.lookup(p.analyses, "analysis", p, req.params["I"])

    def list_analyses(self, req):
        out = []
        for a in self.project(req).analyses.values():
            item = _summary(a)
            item["analysisId"] = a["id"]
            if "inputDatasetSmartName" in a:
                item["inputDataset"] = a["inputDatasetSmartName"]
            item["nbMLTasks"] = len(self.project(req).ml_tasks.get(a["id"], {}))
            out.append(item)
        return out

    def get_analysis(self, req):
        return self.analysis(req)[1]

    def put_analysis(self, req):
        p, old = self.analysis(req)
        aid = req.params["I"]
        p.analyses[aid] = self.replace(old, req.json(), {"projectKey": p.key, "id": aid},
                                       req.user.login)
        return p.analyses[aid]

    def list_ml_tasks(self, req):
        p, a = self.analysis(req)
        tasks = []
        for mid, t in p.ml_tasks.get(a["id"], {}).items():
            item = {"projectKey": p.key, "analysisId": a["id"], "mlTaskId": mid, "id": mid,
                    "name": t.get("name") or mid}
            for k in ("taskType", "predictionType", "targetVariable", "backendType"):
                if k in t:
                    item[k] = t[k]
            tasks.append(item)
        return {"mlTasks": tasks}

    def ml_task(self, req):
        p, a = self.analysis(req)
        tasks = p.ml_tasks.get(a["id"], {})
        mid = req.params["T"]
        if mid not in tasks:
            raise not_found("ML task", p.key, "%s.%s" % (a["id"], mid))
        return p, a, tasks[mid]

    def get_ml_task(self, req):
        return self.ml_task(req)[2]

    def save_ml_task(self, req):
        p, a, old = self.ml_task(req)
        mid = req.params["T"]
        p.ml_tasks[a["id"]][mid] = self.replaced(
            old, req.json(), {"projectKey": p.key, "analysisId": a["id"], "id": mid},
            req.user.login, tagged=False)
        return self.msg("ML task %s.%s.%s saved" % (p.key, a["id"], mid))

    # --- project library ----------------------------------------------------------------------

    def library_node(self, p, path, tree=True):
        name = path.rsplit("/", 1)[-1]
        if path in p.library_dirs:
            node = {"name": name, "path": path, "lastModified": p.library_dirs[path]}
            if tree:
                node["children"] = self.library_children(p, path)
            return node
        data, when = p.library[path]
        return {"name": name, "path": path, "mimeType": library_mime(path, data),
                "lastModified": when}

    def library_children(self, p, parent):
        prefix = parent + "/" if parent else ""
        names = set()
        for path in list(p.library) + list(p.library_dirs):
            if path.startswith(prefix) and path != parent:
                names.add(path[len(prefix):].split("/", 1)[0])
        return [self.library_node(p, prefix + n) for n in sorted(names)]

    def get_library(self, req):
        return self.library_children(self.project(req), "")

    def get_library_file(self, req):
        p = self.project(req)
        path = lib_path(req.params["path"])
        if path in p.library_dirs:
            return self.library_node(p, path)
        if path not in p.library:
            raise not_found("library file", p.key, path)
        data, when = p.library[path]
        out = self.library_node(p, path)
        if req.arg("dataEncoding") == "base64":
            text = base64.b64encode(data).decode("ascii")
        else:
            # As a Java server decodes: invalid UTF-8 sequences become U+FFFD.
            text = data.decode("utf-8", "replace")
        out.update({"data": text, "hasData": True})
        return out

    def library_mkdirs(self, p, path, now):
        """Create ``path`` and its parents as library folders (400 if one is a file)."""
        parts = path.split("/") if path else []
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in p.library:
                raise bad_request("Library path %s is a file" % d)
            p.library_dirs.setdefault(d, now)

    def put_library_file(self, req):
        p = self.project(req)
        path = lib_path(req.params["path"])
        if path in p.library_dirs:
            raise bad_request("Library path %s is a folder" % path)
        now = self.now_ms()
        self.library_mkdirs(p, path.rpartition("/")[0], now)
        p.library[path] = [req.body if isinstance(req.body, bytes) else b"", now]
        return self.msg("Library file %s of project %s saved" % (path, p.key))

    def delete_library_path(self, req):
        p = self.project(req)
        path = lib_path(req.params["path"])
        if path not in p.library and path not in p.library_dirs:
            raise not_found("library file", p.key, path)
        for table in (p.library, p.library_dirs):
            for k in [k for k in table if k == path or k.startswith(path + "/")]:
                del table[k]
        return self.msg("Library path %s of project %s deleted" % (path, p.key))

    def add_library_folder(self, req):
        p = self.project(req)
        path = lib_path(req.params["path"])
        self.library_mkdirs(p, path, self.now_ms())
        return self.msg("Library folder %s of project %s created" % (path, p.key))

    def library_move(self, p, old, new, kind="library file"):
        """Moves a file or folder of a library-like tree (a project library, a dev
        plugin's files); ``kind`` names its files in errors."""
        if old not in p.library and old not in p.library_dirs:
            raise not_found(kind, p.key, old)
        if new in p.library or new in p.library_dirs:
            raise bad_request("%s path %s already exists" % (kind.split()[0].capitalize(), new))
        if new == old or new.startswith(old + "/"):
            raise bad_request("Cannot move %s into itself" % old)
        parent = new.rpartition("/")[0]
        if parent and parent not in p.library_dirs:
            raise not_found(kind.replace("file", "folder"), p.key, parent)
        now = self.now_ms()
        for table in (p.library, p.library_dirs):
            for k in [k for k in table if k == old or k.startswith(old + "/")]:
                table[new + k[len(old):]] = table.pop(k)
        if new in p.library:
            p.library[new][1] = now
        return self.msg("Library path %s moved to %s" % (old, new))

    def rename_library_path(self, req):
        p = self.project(req)
        body = req.json()
        old, name = body.get("oldPath"), body.get("newName")
        if not isinstance(old, str) or not isinstance(name, str) or not name \
                or "/" in name or name in (".", ".."):
            raise bad_request("rename needs 'oldPath' and a 'newName' without '/'")
        old = lib_path(old)
        parent = old.rpartition("/")[0]
        return self.library_move(p, old, (parent + "/" if parent else "") + name)

    def move_library_path(self, req):
        p = self.project(req)
        body = req.json()
        old, dest = body.get("oldPath"), body.get("newPath")
        if not isinstance(old, str) or not isinstance(dest, str):
            raise bad_request("move needs 'oldPath' and 'newPath' (the destination folder)")
        old = lib_path(old)
        dest = lib_path(dest, allow_root=True)
        name = old.rsplit("/", 1)[-1]
        return self.library_move(p, old, (dest + "/" if dest else "") + name)

    # --- managed folder contents (files on disk, FolderStore) --------------------------------

    def folder_dir(self, req):
        p, f = self.obj(req, "managed_folders")
        return p, f, self.files.folder(p.key, f["id"])

    def list_folder_contents(self, req):
        p, f, root = self.folder_dir(req)
        return {"items": self.files.listing(root)}

    def get_folder_file(self, req):
        p, f, root = self.folder_dir(req)
        rel = folder_path(req.params["path"])
        fp = os.path.join(root, rel)
        if not os.path.isfile(fp):
            raise not_found("managed folder file", p.key, "%s/%s" % (f["id"], rel))
        fh = open(fp, "rb")
        return StreamResponse(fh, os.fstat(fh.fileno()).st_size, "application/octet-stream")

    def delete_folder_file(self, req):
        p, f, root = self.folder_dir(req)
        rel = folder_path(req.params["path"])
        self.files.delete(root, rel)
        return self.msg("Deleted %s from managed folder %s.%s" % (rel, p.key, f["id"]))

    def upload_folder_file(self, req):
        """POST .../contents/{path}: multipart (part "file") or raw body, streamed to disk.
        Called WITHOUT the state lock (the body may be large); locks around the state."""
        with self.lock:
            p, f, root = self.folder_dir(req)
            rel = folder_path(req.params["path"])
        tmp = self.files.temp_file()
        try:
            with open(tmp, "wb") as out:
                ctype = req.headers.get("Content-Type") or ""
                if ctype.lower().startswith("multipart/"):
                    copy_multipart_part(req.body, ctype, "file", out)
                else:
                    while True:
                        chunk = req.body.read(CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
            with self.lock:
                p, f, root = self.folder_dir(req)
                now = self.now_ms()
                self.files.install(tmp, root, rel, now)
                size = os.path.getsize(os.path.join(root, rel))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return {"path": "/" + rel, "size": size, "lastModified": now}



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


# ---------------------------------------------------------------------------------------
# Activity: scenario runs with logs, jobs with logs, the project's git history
# (runtime data, not in project folders; see README.md "Activity and history")
# ---------------------------------------------------------------------------------------

RUNS_KEPT = 20     # runs kept per scenario (the oldest are dropped, with their logs)
JOBS_KEPT = 50     # jobs kept per project
GIT_BRANCH = "master"
JOB_TYPES = ("RECURSIVE_BUILD", "NON_RECURSIVE_FORCED_BUILD", "RECURSIVE_FORCED_BUILD",
             "RECURSIVE_MISSING_ONLY_BUILD")
JOB_OUTPUT_TYPES = ("DATASET", "MANAGED_FOLDER", "SAVED_MODEL", "STREAMING_ENDPOINT",
                    "RETRIEVABLE_KNOWLEDGE", "KNOWLEDGE_BANK")
ERR_SCENARIO = "com.dataiku.dip.scenario.ScenarioStepFailedException"


def log_time(ms):
    """DSS's log line date: 2024/03/02-04:15:07.123."""
    return "%s.%03d" % (time.strftime("%Y/%m/%d-%H:%M:%S", time.gmtime(ms // 1000)), ms % 1000)


def iso_ms(ms):
    """2024-03-02T04:15:07.123Z (git log timestamps)."""
    return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)), ms % 1000)


def run_id_of(ms):
    """A scenario run id as DSS makes them: 2024-03-02-04-15-07-123."""
    return "%s-%03d" % (time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(ms // 1000)), ms % 1000)


def job_id_of(name, ms):
    """A job id as DSS makes them: Build_orders_2024-03-02T04-15-07.123."""
    return "Build_%s_%s.%03d" % (name, time.strftime("%Y-%m-%dT%H-%M-%S",
                                                     time.gmtime(ms // 1000)), ms % 1000)


def _producing_recipe(p, dataset):
    """(name, type) of the recipe writing ``dataset`` in project p, else (None, None)."""
    for name, r in p.recipes.items():
        for role in (r.get("outputs") or {}).values():
            for item in (role or {}).get("items") or []:
                if isinstance(item, dict) and item.get("ref") == dataset:
                    return name, r.get("type")
    return None, None


def _activity_error(rtype, dataset):
    """A meaningful failure message for an activity of a recipe of type rtype."""
    if rtype in ("python", "pyspark"):
        return ("Error in Python process: At line 27: <class 'KeyError'>: 'customer_id' "
                "(column missing from the input of %s)" % dataset)
    if rtype in ("sql_query", "sql_script", "hive", "impala", "spark_sql_query"):
        return ("Failed to execute SQL query: ERROR: relation \"public.%s_staging\" does "
                "not exist" % dataset)
    if rtype in ("r", "sparkr"):
        return "Error in R process: object 'campaign_id' not found"
    return ("Input dataset is not ready: the source of %s returned no data (partition "
            "not found)" % dataset)


class Activity:
    """Runtime data of one project: scenario runs, jobs, git commits."""

    def __init__(self):
        self.runs = {}         # scenario id -> [run record], newest first
        self.fires = {}        # (scenario id, trigger run id) -> trigger fire (+ its run id)
        self.jobs = []         # job records, newest first
        self.commits = []      # commit records, newest first
        self.head = {}         # path -> bytes: the files of the newest commit


def _thrown(clazz, title, message, code=None):
    out = {"clazz": clazz, "title": title, "message": message, "stack": ""}
    if code:
        out["code"] = code
    return out


class ActivityMaker:
    """Makes runs and jobs (deterministic when given fixed times and plans)."""

    def __init__(self, p, act):
        self.p = p
        self.act = act

    def job(self, outputs, jtype, login, start, fail=False, scenario=None, trigger="API"):
        """A finished job building ``outputs`` ([{type, id, projectKey, partition}]),
        recorded in the project's jobs; returns it."""
        p = self.p
        first = outputs[0].get("id") if outputs else "nothing"
        jid = job_id_of(first, start)
        h = stable_hash(p.key, jid)
        t = start + 150 + h % 700
        activities, logs = {}, {}
        failed_any = False
        for i, out in enumerate(outputs):
            name = out.get("id")
            part = out.get("partition") or "NP"
            recipe, rtype = _producing_recipe(p, name) if out.get("type") == "DATASET" \
                else (None, None)
            aid = "%s_%s" % (recipe or "build_" + str(name), part)
            a_start = t
            t += 800 + stable_hash(p.key, jid, aid) % 45_000
            failing = fail and i == len(outputs) - 1
            failed_any = failed_any or failing
            rows = 100 + stable_hash(p.key, jid, aid, "rows") % 99_900
            lines = ["[%s] [FRT-%d] [INFO] [dku.flow.activity] - Run activity %s"
                     % (log_time(a_start), 40 + i, aid)]
            if recipe:
                lines.append("[%s] [FRT-%d] [INFO] [dku.flow.activity] - Executing recipe %s "
                             "(type %s) to build %s %s.%s"
                             % (log_time(a_start + 5), 40 + i, recipe, rtype, out.get("type"),
                                out.get("projectKey") or p.key, name))
            act = {"activityId": aid, "recipeName": recipe, "recipeType": rtype,
                   "target": {"type": out.get("type"), "projectKey": out.get("projectKey")
                              or p.key, "id": name, "partition": part},
                   "startTime": a_start, "endTime": t}
            if failing:
                msg = _activity_error(rtype, name)
                lines.append("[%s] [FRT-%d] [ERROR] [dku.flow.activity] - Activity %s failed: %s"
                             % (log_time(t), 40 + i, aid, msg))
                act.update(state="FAILED", errorMessage=msg)
            else:
                lines.append("[%s] [FRT-%d] [INFO] [dku.flow.activity] - Activity %s done: "
                             "%d rows written" % (log_time(t), 40 + i, aid, rows))
                act.update(state="DONE", recordsWritten=rows)
            activities[aid] = act
            logs[aid] = "\n".join(lines) + "\n"
        end = t + 50
        state = "FAILED" if failed_any else "DONE"
        definition = {"id": jid, "projectKey": p.key, "name": "Build %s" % first,
                      "type": jtype, "initiator": login, "initiationTimestamp": start,
                      "triggeredFrom": trigger,
                      "outputs": [{"type": o.get("type"), "projectKey": o.get("projectKey")
                                   or p.key, "id": o.get("id"),
                                   "partition": o.get("partition")} for o in outputs]}
        if scenario:
            definition["scenarioId"], definition["scenarioRunId"] = scenario
        done = sum(1 for a in activities.values() if a["state"] == "DONE")
        record = {
            "def": definition,
            "baseStatus": {"def": definition, "state": state, "jobStartTime": start,
                           "jobEndTime": end, "activities": activities},
            "globalState": {"done": done, "failed": len(activities) - done, "running": 0,
                            "notStarted": 0, "aborted": 0, "total": len(activities)}}
        head = ("[%s] [main] [INFO] [dku.job] - Starting job %s (type %s), initiated by %s\n"
                % (log_time(start), jid, jtype, login))
        tail = ("[%s] [main] [%s] [dku.job] - Job %s\n"
                % (log_time(end), "ERROR" if failed_any else "INFO",
                   "failed" if failed_any else "done"))
        record["_logs"] = logs
        record["_log"] = head + "".join(logs.values()) + tail
        self.act.jobs.insert(0, record)
        self.act.jobs.sort(key=lambda j: -j["def"]["initiationTimestamp"])
        del self.act.jobs[JOBS_KEPT:]
        return record

    def run(self, s, start, login, trigger, fail=False):
        """A finished run of scenario s started at ``start``; recorded, returned."""
        p, sid = self.p, s["id"]
        rid = run_id_of(start)
        sname = s.get("name", sid)
        steps = ((s.get("params") or {}).get("steps") or []) \
            if s.get("type") == "step_based" else \
            [{"id": "script", "type": "custom_python", "name": "Execute Python script"}]
        steps = [st for st in steps if isinstance(st, dict)]
        fail_at = -1
        if fail and steps:
            builds = [i for i, st in enumerate(steps) if st.get("type") == "build_flowitem"]
            fail_at = builds[0] if builds else 0
        t = start + 20
        step_runs, step_logs = [], {}
        lines_head = ["[%s] [scenario-%s] [INFO] [dku.scenario] - Starting scenario %s.%s "
                      "(%s), run %s, trigger: %s"
                      % (log_time(start), rid, p.key, sid, sname, rid,
                         trigger.get("name", trigger.get("id")))]
        outcome = "SUCCESS"
        for i, st in enumerate(steps):
            stid = st.get("id") or "step_%d" % i
            s_start = t
            lines = ["[%s] [scenario-%s] [INFO] [dku.scenario.step] - Run step %s (%s)"
                     % (log_time(s_start), rid, stid, st.get("name", stid))]
            items, thrown = [], None
            failing = i == fail_at
            if st.get("type") == "build_flowitem":
                prm = st.get("params") or {}
                outs = [{"type": b.get("type", "DATASET"), "id": b.get("itemId"),
                         "projectKey": b.get("projectKey") or p.key,
                         "partition": b.get("partitionsSpec") or None}
                        for b in prm.get("builds") or [] if isinstance(b, dict)]
                if outs:
                    job = self.job(outs, prm.get("jobType", "RECURSIVE_BUILD"), login,
                                   t + 10, fail=failing, scenario=(sid, rid),
                                   trigger="SCENARIO")
                    jid, jstate = job["def"]["id"], job["baseStatus"]["state"]
                    lines.append("[%s] [scenario-%s] [INFO] [dku.scenario.step] - Started job %s"
                                 % (log_time(t + 10), rid, jid))
                    t = job["baseStatus"]["jobEndTime"] + 30
                    item = {"type": "JOB_EXECUTED", "jobId": jid,
                            "outcome": "SUCCESS" if jstate == "DONE" else "FAILED"}
                    if jstate != "DONE":
                        err = next(a["errorMessage"] for a in
                                   job["baseStatus"]["activities"].values()
                                   if a["state"] == "FAILED")
                        thrown = _thrown("com.dataiku.dip.exceptions.JobFailedException",
                                         "Job failed", "Job %s failed: %s" % (jid, err),
                                         "ERR_JOB_FAILED")
                        item["thrown"] = thrown
                        lines.append("[%s] [scenario-%s] [ERROR] [dku.scenario.step] - Job %s "
                                     "failed: %s" % (log_time(t), rid, jid, err))
                    else:
                        lines.append("[%s] [scenario-%s] [INFO] [dku.scenario.step] - Job %s "
                                     "done" % (log_time(t), rid, jid))
                    items.append(item)
            else:
                t += 400 + stable_hash(p.key, sid, rid, stid) % 20_000
                if failing and st.get("type") == "custom_python":
                    thrown = _thrown("com.dataiku.dip.exceptions.ExternalProcessFailedException",
                                     "Error in Python process",
                                     "At line 9: <class 'Exception'>: data is stale: the "
                                     "newest row is 3 days old (expected less than 1)",
                                     "ERR_PYTHON_PROCESS_FAILED")
                elif failing and st.get("type") == "send_report":
                    thrown = _thrown("javax.mail.MessagingException", "Failed to send mail",
                                     "Could not connect to SMTP host: mail.example.com, "
                                     "port: 25: Connection refused")
                elif failing:
                    thrown = _thrown(ERR_SCENARIO, "Step failed",
                                     "Step %s (%s) failed" % (stid, st.get("type")))
                if thrown:
                    lines.append("[%s] [scenario-%s] [ERROR] [dku.scenario.step] - %s: %s"
                                 % (log_time(t), rid, thrown["title"], thrown["message"]))
            s_outcome = "FAILED" if thrown else "SUCCESS"
            lines.append("[%s] [scenario-%s] [%s] [dku.scenario.step] - Step %s done, outcome "
                         "%s" % (log_time(t), rid, "ERROR" if thrown else "INFO", stid,
                                 s_outcome))
            result = {"outcome": s_outcome, "type": "STEP_DONE", "start": s_start, "end": t}
            if thrown:
                result["thrown"] = thrown
            step_runs.append({"runId": "%s_%s" % (rid, stid),
                              "step": {"id": stid, "type": st.get("type"),
                                       "name": st.get("name", stid)},
                              "start": s_start, "end": t, "result": result,
                              "additionalReportItems": items})
            step_logs[stid] = "\n".join(lines) + "\n"
            t += 20
            if thrown:
                outcome = "FAILED"
                break
        end = t + 30
        run = {"runId": rid,
               "scenario": {"projectKey": p.key, "id": sid, "name": sname},
               "trigger": {"trigger": trigger},
               "start": start, "end": end,
               "result": {"outcome": outcome, "type": "SCENARIO_DONE", "start": start,
                          "end": end}}
        if s.get("markedAsTest"):
            run["scenario"]["markedAsTest"] = True
        tail = ("[%s] [scenario-%s] [%s] [dku.scenario] - Scenario %s.%s done, outcome %s\n"
                % (log_time(end), rid, "ERROR" if outcome == "FAILED" else "INFO", p.key,
                   sid, outcome))
        record = {"run": run, "stepRuns": step_runs, "stepLogs": step_logs,
                  "log": lines_head[0] + "\n" + "".join(step_logs.values()) + tail}
        runs = self.act.runs.setdefault(sid, [])
        runs.insert(0, record)
        runs.sort(key=lambda r: -r["run"]["start"])
        del runs[RUNS_KEPT:]
        return record


def _trigger_of(s):
    triggers = s.get("triggers") or []
    trig = triggers[0] if triggers and isinstance(triggers[0], dict) else {}
    return {"id": trig.get("id", "manual"), "type": trig.get("type", "manual"),
            "name": trig.get("name", "Manual trigger")}


def demo_activity(p):
    """The deterministic history of a project: 3-8 finished runs per scenario, one a
    day, each the second newest or the newest of them FAILED, with their jobs; then
    the initial git commit (files as loaded, dated the project's creation)."""
    act = Activity()
    maker = ActivityMaker(p, act)
    for sid in sorted(p.scenarios):
        s = p.scenarios[sid]
        h = stable_hash(p.key, sid, "runs")
        total = 3 + h % 6
        newest = T_2020 + 4 * 365 * MS_DAY + (h >> 8) % (300 * MS_DAY)
        failed = (h >> 40) % 2
        login = ((s.get("versionTag") or {}).get("lastModifiedBy") or {}).get("login") \
            or p.owner
        for i in reversed(range(total)):
            hi = stable_hash(p.key, sid, "run", i)
            start = newest - i * MS_DAY + hi % 1000
            maker.run(s, start, login, _trigger_of(s), fail=(i == failed))
    files = project_files(p)
    created = (p.settings.get("creationTag") or {})
    when = created.get("lastModifiedOn") or T_2020
    author = (created.get("lastModifiedBy") or {}).get("login") or p.owner
    digest = hashlib.sha1()
    for path in sorted(files):
        digest.update(path.encode("utf-8", "surrogatepass") + b"\0" + git_blob_id(files[path]).encode())
    commit = hashlib.sha1(("dssfs-emulator initial commit\0%s\0%s\0%d"
                           % (p.key, digest.hexdigest(), when)).encode("utf-8", "surrogatepass")).hexdigest()
    act.commits.append({"entry": {"commit": commit, "author": author,
                                  "timestamp": iso_ms(when),
                                  "message": "Created project %s" % p.key},
                        "parent": None, "files": files, "changed": sorted(files)})
    act.head = files
    return act


# --- git ----------------------------------------------------------------------------------

def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _diff_lines(data):
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def file_diff(path, old, new):
    """(git-style unified diff text, added lines, removed lines) of one file; old or
    new None = the file is added / deleted."""
    a = b"" if old is None else old
    b = b"" if new is None else new
    head = ["diff --git a/%s b/%s\n" % (path, path)]
    if old is None:
        head.append("new file mode 100644\n")
    elif new is None:
        head.append("deleted file mode 100644\n")
    head.append("index %s..%s%s\n" % ("0" * 7 if old is None else git_blob_id(a)[:7],
                                       "0" * 7 if new is None else git_blob_id(b)[:7],
                                       "" if old is None or new is None else " 100644"))
    la, lb = _diff_lines(a), _diff_lines(b)
    src = "/dev/null" if old is None else "a/" + path
    dst = "/dev/null" if new is None else "b/" + path
    if la is None or lb is None:
        return "".join(head) + "Binary files %s and %s differ\n" % (src, dst), 0, 0
    out, added, removed = [], 0, 0
    for k, line in enumerate(difflib.unified_diff(la, lb, src, dst, lineterm="\n", n=3)):
        if k < 2:       # the ---/+++ header lines
            out.append(line)
            continue
        if line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(head) + "".join(out), added, removed


def tree_diff(old_files, new_files):
    """Diff entries between two {path: bytes} trees (sorted by path)."""
    entries = []
    for path in sorted(set(old_files) | set(new_files)):
        old, new = old_files.get(path), new_files.get(path)
        if old == new:
            continue
        text, added, removed = file_diff(path, old, new)
        entries.append({"oldPath": None if old is None else path,
                        "newPath": None if new is None else path,
                        "changeType": "ADD" if old is None else "DELETE" if new is None
                        else "MODIFY",
                        "addedLines": added, "removedLines": removed, "diff": text})
    return entries


_FOLDER_KINDS = {"datasets": "dataset", "recipes": "recipe", "scenarios": "scenario",
                 "wiki": "wiki article", "lib": "library file",
                 "ipython_notebooks": "notebook", "notebooks": "SQL notebook",
                 "analysis": "analysis"}


def _object_of(path):
    """(folder, object name) of a project file: recipes/x.py and recipes/x.json are one
    object; a library file is its own object; a top-level file is (file, "")."""
    top, _, rest = path.partition("/")
    if not rest:
        return top, ""
    if top == "lib":
        return top, rest
    return top, rest.split("/", 1)[0].rsplit(".", 1)[0]


def commit_message(key, changed, old, new):
    """A DSS-like auto-commit message, from the changed paths."""
    objects = {_object_of(p) for p in changed}
    if len(objects) != 1:
        return "Modified %d files of project %s" % (len(changed), key)
    top, name = objects.pop()
    verb = "Created" if all(p not in old for p in changed) else \
        "Deleted" if all(p not in new for p in changed) else "Modified"
    if not name:
        return "%s project %s: %s" % (verb, "settings" if top == "params.json" else
                                      top[:-5] if top.endswith(".json") else top, key)
    kind = _FOLDER_KINDS.get(top)
    if kind is None:
        kind = next((k.label for k in OBJECT_KINDS.values() if k.folder == top), top)
    return "%s %s: %s.%s" % (verb, kind, key, name)


def apply_commit(act, key, login, when_ms, files):
    """Record ``files`` as a new commit if they differ from the head; returns it or None."""
    old = act.head
    changed = sorted(p for p in set(old) | set(files) if old.get(p) != files.get(p))
    if not changed:
        return None
    # Unchanged files share the head's bytes: a commit costs only what it changed.
    files = {p: (old[p] if old.get(p) == data else data) for p, data in files.items()}
    parent = act.commits[0]["entry"]["commit"] if act.commits else None
    message = commit_message(key, changed, old, files)
    seed = "%s\0%s\0%s\0%d\0%s\0%s" % (parent, key, login, when_ms, message,
                                      "\0".join(changed))
    commit = hashlib.sha1(seed.encode("utf-8", "surrogatepass")).hexdigest()
    rec = {"entry": {"commit": commit, "author": login, "timestamp": iso_ms(when_ms),
                     "message": message},
           "parent": parent, "files": files, "changed": changed}
    act.commits.insert(0, rec)
    act.head = files
    return rec


# --- dataset rows -------------------------------------------------------------------------

_WORDS = ("alpha", "Bravo", "charlie", "Delta & co", "écho", "foxtrot", "golf", "hôtel",
          "India \"Ink\"", "juliet")


def _cell(ctype, name, seed, i, first=False):
    """One cell of row i: the first column, when an integer, counts rows (an id)."""
    h = stable_hash(seed, name, i)
    t = (ctype or "string").lower()
    if t in ("tinyint", "smallint", "int", "bigint"):
        return str(i + 1) if first else str(h % 100_000)
    if t in ("float", "double"):
        return "%d.%02d" % (h % 10_000, (h >> 20) % 100)
    if t == "boolean":
        return "true" if h % 2 else "false"
    if t in ("date", "datetimenotz", "datetimetz"):
        return iso_ms(T_2020 + 4 * 365 * MS_DAY + h % (365 * MS_DAY))
    if t == "dateonly":
        return time.strftime("%Y-%m-%d", time.gmtime((T_2020 + h % (1500 * MS_DAY)) / 1000))
    return "%s %d" % (_WORDS[h % len(_WORDS)], i + 1)


def dataset_row_count(p_key, name, overrides):
    for key in ("%s.%s" % (p_key, name), name, "*"):
        if key in overrides:
            return overrides[key]
    return 5 + stable_hash(p_key, name, "rowcount") % 16


def tsv_cell(value, sep):
    if any(c in value for c in (sep, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


class RowStream:
    """A file-like read() over generated rows (dataset data), for StreamResponse."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.buf = b""

    def read(self, n):
        while len(self.buf) < n:
            nxt = next(self.chunks, None)
            if nxt is None:
                break
            self.buf += nxt
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self):
        self.chunks = iter(())


def data_chunks(spec):
    """Encoded lines of a dataset data stream: spec = (key, name, columns [(name,
    type, first in the schema)], partitions, rows per partition, header, sep, max rows)."""
    key, name, cols, partitions, n, header, sep, limit = spec
    batch, sent = [], 0
    if header:
        batch.append(sep.join(tsv_cell(c[0], sep) for c in cols) + "\n")
    for part in partitions:
        seed = "%s\x1f%s\x1f%s" % (key, name, part)
        for i in range(n):
            if limit is not None and sent >= limit:
                break
            batch.append(sep.join(tsv_cell(_cell(t, c, seed, i, first), sep)
                                  for c, t, first in cols) + "\n")
            sent += 1
            if len(batch) >= 512:
                yield "".join(batch).encode("utf-8")
                batch = []
    if batch:
        yield "".join(batch).encode("utf-8")


def project_files(p):
    """The project's configuration as DSS lays it out in its folder: {path: bytes}
    (the export zip's entries and the git history's files). A name or text holding a
    lone surrogate (no UTF-8 form) is encoded with "surrogatepass", not refused."""
    files = {}

    def put_json(path, obj):
        files[path] = json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8", "surrogatepass")

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
        exts = recipe_payload_exts(r.get("type"))
        ext = p.payload_ext.get(name) or (exts[0] if payload and exts else None)
        if ext:
            files["recipes/%s.%s" % (safe(name), ext)] = payload.encode("utf-8", "surrogatepass")
    for sid, s in p.scenarios.items():
        put_json("scenarios/%s.json" % safe(sid), without(s, "projectKey", "id"))
        if sid in p.scripts:
            files["scenarios/%s.py" % safe(sid)] = p.scripts[sid].encode("utf-8", "surrogatepass")
    if p.wiki is not None:
        put_json("wiki/taxonomy.json", without(p.wiki, "projectKey"))
    for aid, a in p.articles.items():
        put_json("wiki/articles/%s.json" % safe(aid), without(a, "projectKey", "id"))
        files["wiki/articles/%s.md" % safe(aid)] = p.article_payloads.get(aid, "").encode("utf-8", "surrogatepass")
    for kind, spec in OBJECT_KINDS.items():
        for oid, o in p.objects[kind].items():
            stored = without(o, "projectKey", "id")
            if kind == "webapps" and isinstance(stored.get("params"), dict):
                params = dict(stored["params"])
                for fn, key in WEBAPP_FILES:
                    if isinstance(params.get(key), str):
                        code = params.pop(key)
                        files["%s/%s/%s" % (spec.folder, safe(oid), fn)] = code.encode("utf-8", "surrogatepass")
                stored["params"] = params
            put_json("%s/%s.json" % (spec.folder, safe(oid)), stored)
    for nid, n in p.sql_notebooks.items():
        put_json("notebooks/sql/%s/params.json" % safe(nid), without(n, "projectKey", "id"))
        put_json("notebooks/sql/%s/queries.json" % safe(nid),
                 {"queries": p.sql_histories.get(nid, {})})
    for name, nb in p.jupyter.items():
        files["ipython_notebooks/%s.ipynb" % safe(name)] = json.dumps(
            nb, indent=1, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for aid, a in p.analyses.items():
        put_json("analysis/%s/core_params.json" % safe(aid), without(a, "projectKey", "id"))
        for mid, t in p.ml_tasks.get(aid, {}).items():
            put_json("analysis/%s/ml/%s/params.json" % (safe(aid), safe(mid)),
                     without(t, "projectKey", "analysisId"))
    for path, (data, _when) in p.library.items():
        files["lib/" + path] = data
    return files


def export_zip(p):
    """The project's configuration as DSS lays it out, in a byte-stable zip."""
    files = project_files(p)
    for path in p.library_dirs:
        if not any(k.startswith(path + "/") for k in p.library):
            files["lib/%s/" % path] = None      # an empty folder

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            info = zipfile.ZipInfo("project_config/" + path, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o40755 if files[path] is None else 0o644) << 16
            zf.writestr(info, files[path] or b"")
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
                 rates=None, missing_routes=()):
        self.state = state
        # --missing-route: project endpoints this "DSS version" lacks (404 as unknown)
        self.missing_routes = tuple(r.strip("/") for r in missing_routes)
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
        self.state.files.cleanup()

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
        rel = segs[2:] if tuple(segs[:2]) in API_PREFIXES else None
        try:
            if rel is not None and self.router.is_stream(method, rel):
                body = BodyReader(h)
            else:
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
            drain(body)
            status, data, ctype = fault.response()
            extra = ()
        else:
            status, data, ctype, extra = self.answer(h, method, rel, segs, query, body)
        self.recorder.record(method, raw)
        h.send_bytes(status, data, ctype, self.dss_version, extra)

    def inject(self, h, kind, opts, method, rel, segs, query, body):
        """Answers (or not) with fault ``kind`` (FAULT_KINDS), options ``opts``."""
        if kind in ("500", "503"):
            drain(body)
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

    def route_missing(self, rel):
        """Whether rel (the path segments after the API prefix) is projects/<K>/<a route
        given to --missing-route>..."""
        tail = "/".join(rel[2:]) if len(rel) > 2 and rel[0] == "projects" else None
        return tail is not None and any(tail == r or tail.startswith(r + "/")
                                        for r in self.missing_routes)

    def answer(self, h, method, rel, segs, query, body):
        """(status, body bytes, content type, extra headers) of a DSS API request."""
        try:
            if rel is None or self.route_missing(rel):
                raise ApiError(404, ERR_NOT_FOUND, "No API endpoint at /" + "/".join(segs))
            user = self.authenticate(h.headers)
            route, params = self.router.match(method, rel)
            if route.access == DSS_ADMIN:
                if not user.admin:
                    raise ApiError(403, ERR_FORBIDDEN, "Action forbidden, you are not an "
                                   "administrator of the DSS instance")
            elif route.access != "instance":
                self.check_access(user, params["K"], route.access)
            req = Request(method, params, parse_qs(query, keep_blank_values=True), body, user,
                          h.headers)
            handler = getattr(self.state, route.handler_name)
            args = (route.arg,) if route.arg else ()
            if route.stream:
                result = handler(req, *args)
            else:
                with self.state.lock:
                    # A write on a project: its git history starts from the loaded
                    # state, and an accepted change is a commit by the key's login.
                    written = self.state.git_prepare(route, params)
                    result = handler(req, *args)
                    if written is not None:
                        self.state.git_record(written, user.login)
            if isinstance(result, RawResponse):
                return 200, result.data, result.content_type, result.headers
            if isinstance(result, StreamResponse):
                return 200, result, result.content_type, ()
            return 200, json_bytes(result), "application/json", ()
        except ApiError as e:
            return e.status, json_bytes(e.body()), "application/json", ()
        except Exception as e:  # a bug in the emulator: say so loudly, answer 500
            traceback.print_exc()
            err = ApiError(500, ERR_INTERNAL, "Emulator internal error: %r" % e)
            return 500, json_bytes(err.body()), "application/json", ()
        finally:
            drain(body)

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
        if what == "secrets" and method == "GET":
            with self.state.lock:
                return self.state.secret_dump()
        if what == "shutdown" and method == "POST":
            h.close_connection = True
            return {"msg": "shutting down"}
        if what in ("stats", "reset-stats", "faults", "fault-rates", "pause", "resume",
                    "shutdown", "secrets"):
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
        if isinstance(data, StreamResponse):
            self.wfile.write(head)
            data.write_to(self.wfile, drip)
            return
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


def drain(body):
    """Reads what is left of a streamed request body (so the connection stays usable)."""
    if isinstance(body, BodyReader):
        body.drain()


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
    ap.add_argument("--dataset-rows", action="append", default=[], metavar="[K.]NAME=ROWS",
                    help="rows of a dataset's data (K.NAME, NAME in any project, or * for "
                         "all; per partition; repeatable). Default: 5-20, deterministic")
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
    ap.add_argument("--missing-route", metavar="R", action="append", default=[],
                    help="answer projects/<K>/R and below with 404 \"No API endpoint\", "
                         "as a DSS version without that object type would (repeatable; "
                         "e.g. agents/tools)")
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


def build_instance(args):
    """The instance scope of the first fixture folder holding an instance/ folder."""
    fixtures = args.fixture or ([] if args.generate else [DEFAULT_FIXTURE])
    for folder in fixtures:
        sub = os.path.join(os.path.abspath(folder), "instance")
        if os.path.isdir(sub) and not os.path.exists(os.path.join(sub, "params.json")):
            return load_instance(sub)
    return None


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


def parse_dataset_rows(items):
    out = {}
    for item in items:
        name, sep, rows = item.rpartition("=")
        try:
            n = int(rows)
        except ValueError:
            sep = ""
        if not sep or not name or n < 0:
            raise SystemExit("dss_emulator: --dataset-rows expects [K.]NAME=ROWS, e.g. "
                             "GEN001.ds_000=1000000")
        out[name] = n
    return out


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    users = build_users(args)
    rates = build_rates(args)
    state = State(build_projects(args), node_type=args.node_type,
                  instance=build_instance(args))
    state.data_rows = parse_dataset_rows(args.dataset_rows)
    emulator = Emulator(state, users, latency_ms=max(0.0, args.latency_ms),
                        log_path=args.log_requests, dss_version=args.dss_version,
                        rates=rates, missing_routes=args.missing_route)
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
