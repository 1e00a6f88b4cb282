"""Tests of the emulator's activity and history (issue 10): scenario runs with logs,
jobs with logs, the project git history (a commit per accepted write, with a unified
diff), streamed dataset rows, the code-env list filter; rights of each kind of key;
determinism across restarts; the official Python client's calls.

Run with: /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/emulator

The official client (dataikuapi) is used when importable: from the environment, or from
the folder named by $DATAIKUAPI_PATH (e.g. a checkout of dataiku-api-client-python);
otherwise those tests are skipped and the HTTP calls it makes are tested directly.
"""

import csv
import io
import json
import os
import sys

import pytest

from test_emulator import (ADMIN_KEY, typed_err as err, FORBIDDEN, ILLEGAL_ARG, NOT_FOUND, READER_KEY,
                           USERS, WRITER_KEY, start)

P = "/projects/SALES"


@pytest.fixture(scope="module")
def emu(request):
    return start(request, *USERS)


@pytest.fixture
def fresh(request):
    return start(request, *USERS)


def text(emu, path, key=ADMIN_KEY, expect=200):
    status, resp, data = emu.request("GET", "/public/api" + path, key=key)
    assert status == expect, (status, data)
    return resp, data.decode("utf-8")


def snapshot(emu):
    """Every activity answer of the demo instance (ids, times, logs, commits)."""
    out = {}
    for key in ("SALES", "MARKETING", "HR_ANALYTICS"):
        p = "/projects/" + key
        for s in emu.api("GET", p + "/scenarios/"):
            runs = emu.api("GET", "%s/scenarios/%s/get-last-runs?limit=50" % (p, s["id"]))
            out[(key, s["id"])] = runs
            for r in runs:
                out[(key, s["id"], r["runId"])] = emu.api(
                    "GET", "%s/scenarios/%s/%s/" % (p, s["id"], r["runId"]))
                out[(key, s["id"], r["runId"], "log")] = text(
                    emu, "%s/scenarios/%s/%s/log" % (p, s["id"], r["runId"]))[1]
        jobs = emu.api("GET", p + "/jobs/")
        out[(key, "jobs")] = jobs
        for j in jobs:
            out[(key, j["def"]["id"], "log")] = text(emu, "%s/jobs/%s/log" % (p, j["def"]["id"]))[1]
        out[(key, "git")] = emu.api("GET", p + "/git/actions/log")
        out[(key, "data")] = text(emu, p + "/datasets/%s/data/?format=tsv-excel-header"
                                  % emu.api("GET", p + "/datasets/")[0]["name"])[1]
    return out


# ---------------------------------------------------------------------------------------
# Scenario runs
# ---------------------------------------------------------------------------------------

def test_last_runs_shape_and_limit(emu):
    runs = emu.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs")
    assert 3 <= len(runs) <= 8
    assert [r["start"] for r in runs] == sorted((r["start"] for r in runs), reverse=True)
    for r in runs:
        assert set(r) >= {"runId", "scenario", "trigger", "start", "end", "result"}
        assert r["scenario"]["projectKey"] == "SALES" and r["scenario"]["id"] == "DAILY_BUILD"
        assert r["trigger"]["trigger"]["id"] == "daily_6am"
        assert r["end"] > r["start"] and r["result"]["outcome"] in ("SUCCESS", "FAILED")
        assert r["start"] < 1_735_689_600_000            # demo runs are dated before 2025
    assert sum(r["result"]["outcome"] == "FAILED" for r in runs) == 1
    assert emu.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs?limit=2") == runs[:2]
    assert emu.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs?limit=0") == []
    only = emu.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs?onlyFinishedRuns=True")
    assert only == runs
    err(emu, "GET", P + "/scenarios/DAILY_BUILD/get-last-runs?limit=x", 400, ILLEGAL_ARG)
    err(emu, "GET", P + "/scenarios/NOPE/get-last-runs", 404, NOT_FOUND)


def test_every_demo_scenario_has_a_failed_run(emu):
    for key in ("SALES", "MARKETING", "HR_ANALYTICS"):
        for s in emu.api("GET", "/projects/%s/scenarios/" % key):
            runs = emu.api("GET", "/projects/%s/scenarios/%s/get-last-runs" % (key, s["id"]))
            assert any(r["result"]["outcome"] == "FAILED" for r in runs), (key, s["id"])


def test_failed_run_details_and_log(emu):
    runs = emu.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs")
    failed = next(r for r in runs if r["result"]["outcome"] == "FAILED")
    d = emu.api("GET", P + "/scenarios/DAILY_BUILD/%s/" % failed["runId"])
    assert d["scenarioRun"] == failed
    step = d["stepRuns"][-1]
    assert step["result"]["outcome"] == "FAILED"
    thrown = step["result"]["thrown"]
    assert set(thrown) >= {"clazz", "title", "message"}
    assert "KeyError" in thrown["message"] and "customer_id" in thrown["message"]
    job_ids = [i["jobId"] for i in step["additionalReportItems"] if i["type"] == "JOB_EXECUTED"]
    assert len(job_ids) == 1
    job = emu.api("GET", P + "/jobs/%s/" % job_ids[0])
    assert job["baseStatus"]["state"] == "FAILED"
    assert job["def"]["scenarioRunId"] == failed["runId"]
    resp, log = text(emu, P + "/scenarios/DAILY_BUILD/%s/log" % failed["runId"])
    assert resp.getheader("Content-Type").startswith("text/plain")
    assert "Starting scenario SALES.DAILY_BUILD" in log
    assert "KeyError" in log and "outcome FAILED" in log.splitlines()[-1]
    _, steplog = text(emu, P + "/scenarios/DAILY_BUILD/%s/log?stepId=build_enriched"
                      % failed["runId"])
    assert steplog in log and steplog.startswith("[") and "Starting scenario" not in steplog
    # the failed step stopped the run: the second step did not run
    assert [s["step"]["id"] for s in d["stepRuns"]] == ["build_enriched"]
    text(emu, P + "/scenarios/DAILY_BUILD/%s/log?stepId=build_by_day" % failed["runId"],
         expect=404)
    err(emu, "GET", P + "/scenarios/DAILY_BUILD/1999-01-01-00-00-00-000/", 404, NOT_FOUND)


def test_custom_python_failure_message(emu):
    runs = emu.api("GET", P + "/scenarios/CHECK_ORDERS/get-last-runs")
    failed = next(r for r in runs if r["result"]["outcome"] == "FAILED")
    d = emu.api("GET", P + "/scenarios/CHECK_ORDERS/%s/" % failed["runId"])
    assert "stale" in d["stepRuns"][0]["result"]["thrown"]["message"]


def test_runs_by_date(emu):
    runs = emu.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs")
    import time
    day = time.strftime("%Y-%m-%d", time.gmtime(runs[0]["start"] / 1000))
    got = emu.api("GET", P + "/scenarios/DAILY_BUILD/get-runs-by-date?fromDate=%s&toDate=2100-01-01"
                  % day)
    assert got == [runs[0]]
    assert emu.api("GET", P + "/scenarios/DAILY_BUILD/get-runs-by-date?fromDate=2000-01-01"
                   "&toDate=2000-01-02") == []
    err(emu, "GET", P + "/scenarios/DAILY_BUILD/get-runs-by-date?fromDate=yesterday", 400,
        ILLEGAL_ARG)


def test_run_a_scenario_appends_a_run(fresh):
    before = fresh.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs")
    jobs_before = fresh.api("GET", P + "/jobs/")
    fire = fresh.api("POST", P + "/scenarios/DAILY_BUILD/run", {"x": 1}, key=WRITER_KEY)
    assert fire["trigger"]["id"] == "manual" and fire["cancelled"] is False
    assert fire["params"] == {"x": 1}
    got = fresh.api("GET", P + "/scenarios/DAILY_BUILD/get-run-for-trigger?triggerId=manual"
                    "&triggerRunId=" + fire["runId"])
    run = got["scenarioRun"]
    after = fresh.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs")
    assert after[0] == run and after[1:] == before
    assert run["result"]["outcome"] == "SUCCESS" and run["start"] > before[0]["start"]
    assert fresh.api("GET", P + "/scenarios/trigger/DAILY_BUILD/manual?triggerRunId="
                     + fire["runId"]) == fire
    d = fresh.api("GET", P + "/scenarios/DAILY_BUILD/%s/" % run["runId"])
    assert [s["step"]["id"] for s in d["stepRuns"]] == ["build_enriched", "build_by_day"]
    jobs = fresh.api("GET", P + "/jobs/")
    assert len(jobs) == min(50, len(jobs_before) + 2)
    assert {j["def"]["initiator"] for j in jobs[:2]} == {"will"}
    assert "will" in text(fresh, P + "/jobs/%s/log" % jobs[0]["def"]["id"])[1]
    # a run is not a change of the project: no commit
    assert len(fresh.api("GET", P + "/git/actions/log")["entries"]) == 1
    assert fresh.api("POST", P + "/scenarios/DAILY_BUILD/abort", key=WRITER_KEY)["msg"]
    err(fresh, "GET", P + "/scenarios/DAILY_BUILD/get-run-for-trigger?triggerId=manual"
        "&triggerRunId=nope", 404, NOT_FOUND)


def test_runs_are_bounded(fresh):
    for _ in range(55):        # one build step: a job per run
        fresh.api("POST", "/projects/HR_ANALYTICS/scenarios/MONTHLY_CLOSE/run", {})
    runs = fresh.api("GET", "/projects/HR_ANALYTICS/scenarios/MONTHLY_CLOSE/get-last-runs"
                     "?limit=100")
    assert len(runs) == 20
    assert all(r["trigger"]["trigger"]["id"] == "manual" for r in runs)
    assert len(fresh.api("GET", "/projects/HR_ANALYTICS/jobs/")) == 50


# ---------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------

def test_jobs_list_status_log(emu):
    jobs = emu.api("GET", P + "/jobs/")
    assert 1 <= len(jobs) <= 50
    starts = [j["def"]["initiationTimestamp"] for j in jobs]
    assert starts == sorted(starts, reverse=True)
    for j in jobs:
        assert j["def"]["id"].startswith("Build_") and j["def"]["projectKey"] == "SALES"
        assert j["baseStatus"]["state"] in ("DONE", "FAILED")
        assert set(j["globalState"]) >= {"done", "failed", "running", "total"}
    one = jobs[-1]
    assert emu.api("GET", P + "/jobs/%s/" % one["def"]["id"]) == one
    assert emu.api("GET", P + "/jobs/%s" % one["def"]["id"]) == one
    resp, log = text(emu, P + "/jobs/%s/log" % one["def"]["id"])
    assert resp.getheader("Content-Type").startswith("text/plain")
    assert log.splitlines()[0].endswith("initiated by %s" % one["def"]["initiator"])
    activity = next(iter(one["baseStatus"]["activities"]))
    _, part = text(emu, P + "/jobs/%s/log?activity=%s" % (one["def"]["id"], activity))
    assert part in log and activity in part
    text(emu, P + "/jobs/%s/log?activity=nope" % one["def"]["id"], expect=404)
    err(emu, "GET", P + "/jobs/Build_nope/", 404, NOT_FOUND)
    failed = [j for j in jobs if j["baseStatus"]["state"] == "FAILED"]
    assert failed
    bad = next(a for a in failed[0]["baseStatus"]["activities"].values()
               if a["state"] == "FAILED")
    assert bad["errorMessage"] in text(emu, P + "/jobs/%s/log" % failed[0]["def"]["id"])[1]


def test_start_and_abort_a_job(fresh):
    jid = fresh.api("POST", P + "/jobs/", {
        "type": "NON_RECURSIVE_FORCED_BUILD", "refreshHiveMetastore": False,
        "autoUpdateSchemaBeforeEachRecipeRun": False,
        "outputs": [{"type": "DATASET", "id": "top_customers", "projectKey": None,
                     "partition": None}]}, key=WRITER_KEY)["id"]
    assert jid.startswith("Build_top_customers_")
    status = fresh.api("GET", P + "/jobs/%s/" % jid, key=READER_KEY)
    assert status["baseStatus"]["state"] == "DONE"
    assert status["def"]["initiator"] == "will" and status["def"]["triggeredFrom"] == "API"
    assert fresh.api("GET", P + "/jobs/", key=READER_KEY)[0] == status
    assert "compute_top_customers_NP" in status["baseStatus"]["activities"]
    assert "compute_top_customers" in text(fresh, P + "/jobs/%s/log" % jid)[1]
    assert fresh.api("POST", P + "/jobs/%s/abort" % jid, key=WRITER_KEY)["msg"]
    assert fresh.api("GET", P + "/jobs/%s/" % jid)["baseStatus"]["state"] == "DONE"
    err(fresh, "POST", P + "/jobs/", 404, NOT_FOUND,
        body={"type": "NON_RECURSIVE_FORCED_BUILD",
              "outputs": [{"type": "DATASET", "id": "nope"}]})
    err(fresh, "POST", P + "/jobs/", 400, ILLEGAL_ARG,
        body={"type": "WHATEVER", "outputs": [{"type": "DATASET", "id": "orders"}]})
    err(fresh, "POST", P + "/jobs/", 400, ILLEGAL_ARG,
        body={"type": "RECURSIVE_BUILD", "outputs": []})
    assert len(fresh.api("GET", P + "/git/actions/log")["entries"]) == 1


# ---------------------------------------------------------------------------------------
# Git history
# ---------------------------------------------------------------------------------------

def test_initial_commit_and_status(emu):
    log = emu.api("GET", P + "/git/actions/log")
    assert list(log) == ["entries"]
    (entry,) = log["entries"]
    assert set(entry) == {"commit", "author", "timestamp", "message"}
    assert len(entry["commit"]) == 40 and entry["author"] == "alice"
    assert entry["timestamp"] == "2023-01-03T10:30:00.456Z"     # the project's creationTag
    st = emu.api("GET", P + "/git/status")
    assert st["currentBranch"] == "master" and st["clean"] is True
    assert st["hasUncommittedChanges"] is False and st["modified"] == []
    assert emu.api("GET", P + "/git/branches") == ["master"]
    assert emu.api("GET", P + "/git/current-branch") == {"name": "master"}
    d = emu.api("GET", P + "/git/actions/diff?commitFrom=" + entry["commit"])
    files = {e["newPath"] for e in d["entries"]}
    assert {"params.json", "datasets/orders.json", "recipes/compute_orders_enriched.py",
            "datasets/ventes é 2024.json"} <= files
    assert all(e["changeType"] == "ADD" for e in d["entries"])
    assert d["changedFiles"] == len(d["entries"]) and d["removedLines"] == 0
    assert d["commitFrom"] == {} and d["commitTo"] == entry
    # working copy vs HEAD: every write is committed, nothing pending
    assert emu.api("GET", P + "/git/actions/diff")["entries"] == []
    err(emu, "GET", P + "/git/actions/diff?commitFrom=" + "0" * 40, 404, NOT_FOUND)
    err(emu, "GET", P + "/git/actions/log?startCommit=" + "0" * 40, 404, NOT_FOUND)
    err(emu, "GET", P + "/git/actions/log?count=0", 400, ILLEGAL_ARG)


def test_a_commit_per_write_with_a_diff(fresh):
    ds = fresh.api("GET", P + "/datasets/orders")
    ds["description"] = "Orders, deduplicated"
    fresh.api("PUT", P + "/datasets/orders", ds, key=WRITER_KEY)
    rec = fresh.api("GET", P + "/recipes/compute_orders_enriched")
    rec["payload"] += "# a new last line\n"
    fresh.api("PUT", P + "/recipes/compute_orders_enriched", rec)
    md = fresh.api("GET", P + "/metadata")
    md["shortDesc"] = "changed"
    fresh.api("PUT", P + "/metadata", md)
    err(fresh, "PUT", P + "/datasets/orders", 400, ILLEGAL_ARG, body={"name": "other"})
    err(fresh, "PUT", P + "/datasets/orders", 403, FORBIDDEN, body=ds, key=READER_KEY)
    log = fresh.api("GET", P + "/git/actions/log")["entries"]
    assert [e["message"] for e in log] == [
        "Modified project settings: SALES", "Modified recipe: SALES.compute_orders_enriched",
        "Modified dataset: SALES.orders", "Created project SALES"]
    assert [e["author"] for e in log] == ["admin", "admin", "will", "alice"]
    assert log[0]["timestamp"] > log[1]["timestamp"] > log[2]["timestamp"]

    d = fresh.api("GET", P + "/git/actions/diff?commitFrom=" + log[2]["commit"])
    (entry,) = d["entries"]
    assert entry["oldPath"] == entry["newPath"] == "datasets/orders.json"
    assert entry["changeType"] == "MODIFY"
    assert entry["diff"].startswith("diff --git a/datasets/orders.json b/datasets/orders.json\n")
    assert "\n--- a/datasets/orders.json\n+++ b/datasets/orders.json\n@@ " in entry["diff"]
    assert '+  "description": "Orders, deduplicated",' in entry["diff"]
    assert '-    "versionNumber": 7,' in entry["diff"] and '+      "login": "will"' in entry["diff"]
    assert d["addedLines"] == entry["addedLines"] == entry["diff"].count("\n+") - 1
    assert d["commitFrom"] == log[3] and d["commitTo"] == log[2]

    d = fresh.api("GET", P + "/git/actions/diff?commitFrom=" + log[1]["commit"])
    paths = [e["newPath"] for e in d["entries"]]
    assert paths == ["recipes/compute_orders_enriched.json",
                     "recipes/compute_orders_enriched.py"]
    assert "+# a new last line\n" in d["entries"][1]["diff"]

    # between two commits; paging; path filter
    d = fresh.api("GET", P + "/git/actions/diff?commitFrom=%s&commitTo=%s"
                  % (log[3]["commit"], log[0]["commit"]))
    assert {e["newPath"] for e in d["entries"]} == {
        "datasets/orders.json", "recipes/compute_orders_enriched.json",
        "recipes/compute_orders_enriched.py", "params.json"}
    page = fresh.api("GET", P + "/git/actions/log?count=2")
    assert page["entries"] == log[:2] and page["nextCommit"] == log[2]["commit"]
    page = fresh.api("GET", P + "/git/actions/log?count=2&startCommit=" + page["nextCommit"])
    assert page == {"entries": log[2:]}
    assert fresh.api("GET", P + "/git/actions/log?path=datasets/orders.json")["entries"] \
        == [log[2], log[3]]
    assert fresh.api("GET", P + "/git/actions/log?path=recipes")["entries"] == [log[1], log[3]]
    # the reader sees the history of a project it can read
    assert fresh.api("GET", P + "/git/actions/log", key=READER_KEY)["entries"] == log


def test_a_new_object_and_library_file_commits(fresh):
    fresh.api("POST", P + "/datasets/", {"name": "fresh_ds"})
    fresh.request("POST", "/public/api" + P + "/libraries/contents/python/new.py",
                  b"x = 1\n")
    log = fresh.api("GET", P + "/git/actions/log")["entries"]
    assert log[1]["message"] == "Created dataset: SALES.fresh_ds"
    assert log[0]["message"] == "Created library file: SALES.python/new.py"
    d = fresh.api("GET", P + "/git/actions/diff?commitFrom=" + log[0]["commit"])
    (e,) = d["entries"]
    assert e["changeType"] == "ADD" and e["oldPath"] is None
    assert e["diff"] == ("diff --git a/lib/python/new.py b/lib/python/new.py\n"
                         "new file mode 100644\nindex 0000000..%s\n--- /dev/null\n"
                         "+++ b/lib/python/new.py\n@@ -0,0 +1 @@\n+x = 1\n"
                         % e["diff"].split("..")[1][:7])
    fresh.request("DELETE", "/public/api" + P + "/libraries/contents/python/new.py")
    log = fresh.api("GET", P + "/git/actions/log")["entries"]
    assert log[0]["message"] == "Deleted library file: SALES.python/new.py"
    d = fresh.api("GET", P + "/git/actions/diff?commitFrom=" + log[0]["commit"])
    assert d["entries"][0]["changeType"] == "DELETE" and d["entries"][0]["newPath"] is None
    # other projects are untouched
    assert len(fresh.api("GET", "/projects/MARKETING/git/actions/log")["entries"]) == 1


# ---------------------------------------------------------------------------------------
# Dataset rows
# ---------------------------------------------------------------------------------------

def rows_of(emu, name, query="format=tsv-excel-noheader", key=ADMIN_KEY, project="SALES"):
    resp, body = text(emu, "/projects/%s/datasets/%s/data/?%s" % (project, name, query),
                      key=key)
    return resp, list(csv.reader(io.StringIO(body), delimiter="\t", quotechar='"',
                                 doublequote=True))


def test_dataset_rows(emu):
    cols = [c["name"] for c in emu.api("GET", P + "/datasets/orders/schema")["columns"]]
    resp, rows = rows_of(emu, "orders")
    assert resp.getheader("Content-Type").startswith("text/tab-separated-values")
    assert 5 <= len(rows) <= 20 and all(len(r) == len(cols) for r in rows)
    assert [r[0] for r in rows] == [str(i + 1) for i in range(len(rows))]
    _, with_header = rows_of(emu, "orders", "format=tsv-excel-header")
    assert with_header[0] == cols and with_header[1:] == rows
    _, two = rows_of(emu, "orders", "format=tsv-excel-noheader&columns=amount,order_id")
    assert two == [[r[cols.index("amount")], r[0]] for r in rows]
    _, head = rows_of(emu, "orders", 'format=tsv-excel-noheader&sampling='
                      '{"samplingMethod":"HEAD_SEQUENTIAL","maxRecords":2}')
    assert head == rows[:2]
    resp, body = text(emu, P + "/datasets/orders/data/?format=csv")
    assert resp.getheader("Content-Type").startswith("text/csv")
    assert list(csv.reader(io.StringIO(body)))[1:] == rows
    # a quoted cell survives (the word list holds a double quote)
    _, all_rows = rows_of(emu, "customers")
    assert all_rows
    # partitions
    parts = emu.api("GET", P + "/datasets/orders_by_day/partitions")
    _, whole = rows_of(emu, "orders_by_day")
    _, first = rows_of(emu, "orders_by_day", "format=tsv-excel-noheader&partitions=" + parts[0])
    assert first and whole[:len(first)] == first and len(whole) == len(first) * len(parts)
    rows_of_err = emu.api("GET", P + "/datasets/orders_by_day/data/?partitions=1999-01-01",
                          expect=404)
    assert rows_of_err["errorType"] == NOT_FOUND
    err(emu, "GET", P + "/datasets/orders/data/?format=parquet", 400, ILLEGAL_ARG)
    err(emu, "GET", P + "/datasets/orders/data/?columns=nope", 400, ILLEGAL_ARG)
    err(emu, "GET", P + "/datasets/nope/data/", 404, NOT_FOUND)
    assert emu.api("GET", P + "/datasets/orders/finish-streaming/?readSessionId=abc")["msg"]
    # rights: a reader of SALES reads the rows, not those of another project
    assert rows_of(emu, "orders", key=READER_KEY)[1] == rows
    err(emu, "GET", "/projects/MARKETING/datasets/leads/data/", 403, FORBIDDEN, key=READER_KEY)


def test_big_dataset_rows(request):
    emu = start(request, "--generate", "1,2", "--dataset-rows", "GEN001.ds_000=200000")
    status, resp, data = emu.request(
        "GET", "/public/api/projects/GEN001/datasets/ds_000/data/?format=tsv-excel-noheader")
    assert status == 200
    assert int(resp.getheader("Content-Length")) == len(data) > 5_000_000
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 200_000 and lines[-1].split("\t")[0] == "200000"
    # the other dataset keeps its default size
    _, small = rows_of(emu, "ds_001", project="GEN001")
    assert 5 <= len(small) <= 20 * 5


# ---------------------------------------------------------------------------------------
# Rights, determinism, code envs
# ---------------------------------------------------------------------------------------

def test_rights(emu):
    run = emu.api("GET", P + "/scenarios/DAILY_BUILD/get-last-runs", key=READER_KEY)[0]
    emu.api("GET", P + "/scenarios/DAILY_BUILD/%s/" % run["runId"], key=READER_KEY)
    text(emu, P + "/scenarios/DAILY_BUILD/%s/log" % run["runId"], key=READER_KEY)
    job = emu.api("GET", P + "/jobs/", key=READER_KEY)[0]["def"]["id"]
    text(emu, P + "/jobs/%s/log" % job, key=READER_KEY)
    emu.api("GET", P + "/git/actions/log", key=READER_KEY)
    emu.api("GET", P + "/git/status", key=READER_KEY)
    for method, path, body in (
            ("POST", P + "/scenarios/DAILY_BUILD/run", {}),
            ("POST", P + "/scenarios/DAILY_BUILD/abort", None),
            ("POST", P + "/jobs/", {"type": "RECURSIVE_BUILD",
                                    "outputs": [{"type": "DATASET", "id": "orders"}]}),
            ("POST", P + "/jobs/%s/abort" % job, None),
            ("POST", P + "/git/actions/commit", {"message": "x"})):
        err(emu, method, path, 403, FORBIDDEN, body=body, key=READER_KEY)
    for path in ("/scenarios/MONTHLY_CLOSE/get-last-runs", "/jobs/", "/git/actions/log",
                 "/git/actions/diff", "/datasets/employees/data/", "/jobs/x/log",
                 "/scenarios/NOPE/x/log"):
        err(emu, "GET", "/projects/HR_ANALYTICS" + path, 403, FORBIDDEN, key=WRITER_KEY)
        err(emu, "GET", "/projects/NOPROJECT" + path, 403, FORBIDDEN, key=READER_KEY)
        err(emu, "GET", "/projects/NOPROJECT" + path, 404, NOT_FOUND)


def test_deterministic_across_restarts(request):
    a = snapshot(start(request))
    b = snapshot(start(request))
    assert a == b


def test_code_envs_filter(emu):
    every = emu.api("GET", "/admin/code-envs/")
    assert {(e["envLang"], e["envName"]) for e in every} == {("PYTHON", "py311_sales"),
                                                             ("R", "r_hr")}
    assert emu.api("GET", "/admin/code-envs/?envLang=PYTHON") == [
        e for e in every if e["envLang"] == "PYTHON"]
    assert emu.api("GET", "/admin/code-envs/?envLang=r") == [
        e for e in every if e["envLang"] == "R"]
    err(emu, "GET", "/admin/code-envs/?envLang=JULIA", 400, ILLEGAL_ARG)
    err(emu, "GET", "/admin/code-envs/?envLang=PYTHON", 403, FORBIDDEN, key=READER_KEY)


# ---------------------------------------------------------------------------------------
# The official Python client, unchanged
# ---------------------------------------------------------------------------------------

def client_module():
    extra = os.environ.get("DATAIKUAPI_PATH")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    try:
        import dataikuapi
    except ImportError as e:
        pytest.skip("the official client dataikuapi is not importable (%s); set "
                    "DATAIKUAPI_PATH to a checkout of dataiku-api-client-python" % e)
    return dataikuapi


def test_official_client(fresh):
    dataikuapi = client_module()
    client = dataikuapi.DSSClient("http://127.0.0.1:%d" % fresh.port, WRITER_KEY)
    project = client.get_project("SALES")
    scenario = project.get_scenario("DAILY_BUILD")
    runs = scenario.get_last_runs(limit=5)
    assert 3 <= len(runs) <= 5 and not any(r.running for r in runs)
    failed = next(r for r in runs if r.outcome == "FAILED")
    details = failed.get_details()
    assert "customer_id" in details.first_error_details["message"]
    assert details.steps[0].job_ids
    assert "outcome FAILED" in failed.get_log()
    assert scenario.get_run(failed.id).id == failed.id
    assert failed.get_duration() > 0
    run = scenario.run_and_wait()          # trigger fire -> run -> finished
    assert run.outcome == "SUCCESS"
    assert scenario.get_last_runs(limit=1)[0].id == run.id

    jobs = project.list_jobs()
    job = project.get_job(jobs[0]["def"]["id"])
    assert job.get_status()["baseStatus"]["state"] == "DONE"
    assert "Starting job" in job.get_log()
    built = project.get_dataset("top_customers").build()
    assert built.get_status()["baseStatus"]["state"] == "DONE"
    assert project.new_job("NON_RECURSIVE_FORCED_BUILD").with_output("orders") \
        .start_and_wait().get_status()["baseStatus"]["state"] == "DONE"

    git = project.get_project_git()
    assert git.get_status()["currentBranch"] == "master"
    settings = project.get_dataset("orders").get_settings()
    settings.get_raw()["description"] = "via the client"
    settings.save()
    log = git.log()
    assert log["entries"][0]["message"] == "Modified dataset: SALES.orders"
    assert log["entries"][0]["author"] == "will"
    diff = git.diff(log["entries"][0]["commit"])
    assert diff["entries"][0]["newPath"] == "datasets/orders.json"
    assert '+  "description": "via the client",' in diff["entries"][0]["diff"]

    rows = list(project.get_dataset("orders").iter_rows())
    assert rows and rows[0][0] == 1          # bigint cast by the client
    admin = dataikuapi.DSSClient("http://127.0.0.1:%d" % fresh.port, ADMIN_KEY)
    assert {e["envName"] for e in admin.list_code_envs()} == {"py311_sales", "r_hr"}
