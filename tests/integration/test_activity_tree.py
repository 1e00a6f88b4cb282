"""Activity and history through the real mount (issue 10): scenario runs and their logs,
jobs and their logs, the project's git history (log.json and one .diff per commit), and a
dataset's rows as data.csv.

Listing policy: runs/, jobs/ and history/ are reachable by name but not listed in their
parents unless the mount has ``-o activity`` (a nightly ``rsync -a`` of the mount copies
configuration, not activity); inside them everything is listed.  data.csv is never listed
and is bounded by ``-o data_max`` (MiB): beyond it reading fails with EFBIG, logged.

Each test compares what the mount shows with direct GETs to the emulator and, where it
means something, the exact requests dssfs made.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import subprocess
import time

import pytest

from dssfs_harness import READER_KEY, errno_of, read_bytes

P = "projects/SALES"
SCEN = ("SALES", "scenarios", "DAILY_BUILD")


def api_text(emu, rel, key=None) -> bytes:
    status, data = emu.api_get_raw(rel, key=key)
    assert status == 200, (rel, status, data[:300])
    return data


def gets(emu):
    return [ln.split()[1] for ln in emu.log_lines() if ln.startswith("GET ")]


def edit_json(path, fn):
    with open(path, "rb") as f:
        doc = json.loads(f.read())
    fn(doc)
    with open(path, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")


# ---------------------------------------------------------------------------------------
# Listing policy
# ---------------------------------------------------------------------------------------

def test_activity_is_reachable_by_name_and_not_listed_by_default(emulator, mount_factory):
    m = mount_factory(emulator)
    project = os.listdir(m.path("SALES"))
    assert "datasets" in project and "jobs" not in project and "history" not in project
    scenario = os.listdir(m.path(*SCEN))
    assert "settings.json" in scenario and "runs" not in scenario
    assert "data.csv" not in os.listdir(m.path("SALES", "datasets", "orders"))
    # ... and yet there by name: ls, less
    assert os.path.isdir(m.path("SALES", "jobs")) and os.listdir(m.path("SALES", "jobs"))
    assert os.listdir(m.path(*SCEN, "runs"))
    assert json.loads(read_bytes(m.path("SALES", "history", "log.json")))
    assert read_bytes(m.path("SALES", "datasets", "orders", "data.csv")).startswith(b"order_id,")


def test_activity_is_listed_with_the_option(emulator, mount_factory):
    m = mount_factory(emulator, options=["activity"])
    project = os.listdir(m.path("SALES"))
    assert "jobs" in project and "history" in project
    assert "runs" in os.listdir(m.path(*SCEN))
    # the rows stay unlisted: their size is known only once streamed
    assert "data.csv" not in os.listdir(m.path("SALES", "datasets", "orders"))


def test_a_default_walk_asks_for_no_activity(emulator, mount_factory):
    """Neither the walk nor the prefetch behind it fetch a run list, a job or a commit."""
    m = mount_factory(emulator)
    emulator.reset_stats()
    subprocess.run(["find", m.path("SALES"), "-type", "f"], check=True, capture_output=True,
                   timeout=120)
    m.settle()
    asked = gets(emulator)
    assert asked and not [g for g in asked if "/get-last-runs" in g or "/jobs/" in g
                          or "/git/" in g or "/data/" in g], asked


# ---------------------------------------------------------------------------------------
# Runs, jobs, history: content equal to the API's
# ---------------------------------------------------------------------------------------

def test_runs_show_the_last_runs_as_dss_serves_them(emulator, mount_factory):
    m = mount_factory(emulator, options=["prefetch=0"])
    emulator.reset_stats()
    names = sorted(os.listdir(m.path(*SCEN, "runs")))
    # one list, of the last 20 runs (prefetch is off: only what ls asked for)
    assert [g for g in gets(emulator) if "/DAILY_BUILD/" in g] == [
        "/public/api/%s/scenarios/DAILY_BUILD/get-last-runs?limit=20" % P]
    runs = emulator.api_get(P + "/scenarios/DAILY_BUILD/get-last-runs?limit=20")
    assert names == sorted(r["runId"] for r in runs) and len(names) >= 3
    for r in runs:
        d = m.path(*SCEN, "runs", r["runId"])
        assert sorted(os.listdir(d)) == ["log.txt", "run.json"]
        rel = "%s/scenarios/DAILY_BUILD/%s" % (P, r["runId"])
        assert json.loads(read_bytes(os.path.join(d, "run.json"))) == emulator.api_get(rel + "/")
        assert read_bytes(os.path.join(d, "log.txt")) == api_text(emulator, rel + "/log")
        # a run's time is its start, for its folder and its files
        for p in (d, os.path.join(d, "run.json"), os.path.join(d, "log.txt")):
            st = os.stat(p)
            assert int(st.st_mtime) == r["start"] // 1000, p
            assert p == d or st.st_mode & 0o222 == 0, p
        assert os.stat(os.path.join(d, "log.txt")).st_size == len(api_text(emulator, rel + "/log"))


def test_a_failed_runs_log_shows_its_error(emulator, mount_factory):
    m = mount_factory(emulator)
    runs = emulator.api_get(P + "/scenarios/DAILY_BUILD/get-last-runs")
    failed = next(r for r in runs if r["result"]["outcome"] == "FAILED")
    d = m.path(*SCEN, "runs", failed["runId"])
    log = read_bytes(os.path.join(d, "log.txt")).decode()
    assert "KeyError" in log and "'customer_id'" in log
    assert log.splitlines()[-1].endswith("outcome FAILED")
    run = json.loads(read_bytes(os.path.join(d, "run.json")))
    assert run["scenarioRun"]["result"]["outcome"] == "FAILED"
    assert "KeyError" in run["stepRuns"][-1]["result"]["thrown"]["message"]
    # the job the failed step ran, by name, with the same error in its log
    job = next(i["jobId"] for i in run["stepRuns"][-1]["additionalReportItems"]
               if i["type"] == "JOB_EXECUTED")
    status = json.loads(read_bytes(m.path("SALES", "jobs", job, "status.json")))
    assert status["baseStatus"]["state"] == "FAILED"
    assert "KeyError" in read_bytes(m.path("SALES", "jobs", job, "log.txt")).decode()


def test_jobs_show_dss_list_with_status_and_log(emulator, mount_factory):
    m = mount_factory(emulator)
    jobs = emulator.api_get(P + "/jobs/")
    assert sorted(os.listdir(m.path("SALES", "jobs"))) == sorted(j["def"]["id"] for j in jobs)
    for j in jobs:
        d = m.path("SALES", "jobs", j["def"]["id"])
        assert sorted(os.listdir(d)) == ["log.txt", "status.json"]
        assert json.loads(read_bytes(os.path.join(d, "status.json"))) == j
        assert read_bytes(os.path.join(d, "log.txt")) == api_text(
            emulator, "%s/jobs/%s/log" % (P, j["def"]["id"]))
        assert int(os.stat(d).st_mtime) == j["def"]["initiationTimestamp"] // 1000


def test_a_reader_reads_the_activity_of_its_project_only(emulator_factory, mount_factory):
    emu = emulator_factory(users=["%s:reader:SALES=read,*=none" % READER_KEY])
    m = mount_factory(emu, key=READER_KEY, expect_errors=True)
    jobs = emu.api_get(P + "/jobs/")
    assert sorted(os.listdir(m.path("SALES", "jobs"))) == sorted(j["def"]["id"] for j in jobs)
    assert json.loads(read_bytes(m.path("SALES", "history", "log.json")))
    assert read_bytes(m.path("SALES", "datasets", "orders", "data.csv"))
    # another project's activity: refused as its documents are
    refused = errno_of(os.stat, m.path("MARKETING", "metadata.json"))
    assert refused in (errno.EACCES, errno.ENOENT)
    for path in (("MARKETING", "jobs"), ("MARKETING", "history", "log.json"),
                 ("MARKETING", "datasets", "leads", "data.csv")):
        assert errno_of(os.stat, m.path(*path)) == refused, path


def test_history_shows_a_write_made_through_the_mount(emulator_factory, mount_factory,
                                                      tmp_path):
    emu = emulator_factory()
    m = mount_factory(emu)
    before = json.loads(read_bytes(m.path("SALES", "history", "log.json")))
    assert before == emu.api_get(P + "/git/actions/log?count=100")["entries"]
    assert len(os.listdir(m.path("SALES", "history"))) == len(before) + 1
    edit_json(m.path("SALES", "datasets", "orders", "settings.json"),
              lambda d: d.__setitem__("description", "Orders, from the mount"))
    # a save is a commit: the history shows it at once, not after cache_ttl
    log = json.loads(read_bytes(m.path("SALES", "history", "log.json")))
    assert log == emu.api_get(P + "/git/actions/log?count=100")["entries"]
    assert len(log) == len(before) + 1 and log[1:] == before
    assert log[0]["message"] == "Modified dataset: SALES.orders"
    assert log[0]["author"] == "admin"
    assert sorted(os.listdir(m.path("SALES", "history"))) == sorted(
        ["log.json"] + [e["commit"] + ".diff" for e in log])
    diff = read_bytes(m.path("SALES", "history", log[0]["commit"] + ".diff")).decode()
    api = emu.api_get(P + "/git/actions/diff?commitFrom=" + log[0]["commit"])
    assert diff == "".join(e["diff"] for e in api["entries"])
    assert diff.startswith("diff --git a/datasets/orders.json b/datasets/orders.json\n")
    assert '+  "description": "Orders, from the mount",' in diff
    # the folder and the log take the newest commit's time
    newest = log[0]["timestamp"]
    t = time.strptime(newest[:19], "%Y-%m-%dT%H:%M:%S")
    want = int(time.mktime(t) - time.timezone)
    assert int(os.stat(m.path("SALES", "history")).st_mtime) == want
    assert int(os.stat(m.path("SALES", "history", "log.json")).st_mtime) == want
    # the diffs are patches git applies: the first commit made from nothing, then ours
    # (but for the files DSS calls binary: its diff names them only)
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for e in reversed(log):
        patch = m.path("SALES", "history", e["commit"] + ".diff")
        binary = [x["newPath"] for x in emu.api_get(
            P + "/git/actions/diff?commitFrom=" + e["commit"])["entries"]
            if x["diff"].startswith("diff --git") and "\nBinary files " in x["diff"]]
        r = subprocess.run(["git", "apply", "--whitespace=nowarn"]
                           + ["--exclude=" + b for b in binary] + [patch], cwd=repo,
                           capture_output=True, text=True)
        assert r.returncode == 0, (e["message"], r.stderr)
    with open(repo / "datasets" / "orders.json") as f:
        assert json.load(f)["description"] == "Orders, from the mount"


# ---------------------------------------------------------------------------------------
# data.csv
# ---------------------------------------------------------------------------------------

def test_data_csv_holds_the_rows_and_is_fetched_once(emulator, mount_factory):
    m = mount_factory(emulator)
    path = m.path("SALES", "datasets", "customers", "data.csv")
    emulator.reset_stats()
    first = read_bytes(path)
    second = read_bytes(path)
    assert first == second
    assert [g for g in gets(emulator) if "/data/" in g] == [
        "/public/api/%s/datasets/customers/data/?format=tsv-excel-header" % P]
    tsv = api_text(emulator, P + "/datasets/customers/data/?format=tsv-excel-header")
    table = list(csv.reader(io.StringIO(tsv.decode(), newline=""), delimiter="\t"))
    assert list(csv.reader(io.StringIO(first.decode(), newline=""))) == table
    assert len(table) > 2 and any('"' in c for row in table for c in row)
    # the same bytes as the emulator's own CSV (comma, Excel quoting)
    assert first == api_text(emulator, P + "/datasets/customers/data/?format=csv")
    assert os.stat(path).st_size == len(first)
    assert os.stat(path).st_mode & 0o222 == 0


@pytest.mark.expect_dssfs_errors
def test_data_csv_over_data_max_fails_and_says_why(emulator_factory, mount_factory):
    emu = emulator_factory(args=["--dataset-rows", "SALES.orders=60000"])
    m = mount_factory(emu, options=["data_max=1"])
    big = m.path("SALES", "datasets", "orders", "data.csv")
    assert len(api_text(emu, P + "/datasets/orders/data/?format=csv")) > 1 << 20
    assert errno_of(read_bytes, big) == errno.EFBIG
    m.settle()
    assert any("data_max=1" in ln and "datasets/orders/data" in ln for ln in m.error_lines()), \
        m.error_lines()
    # the answer stands for cache_ttl: not downloaded again at each lookup or read
    emu.reset_stats()
    assert errno_of(os.stat, big) == errno.EFBIG
    assert errno_of(read_bytes, big) == errno.EFBIG
    assert not [ln for ln in emu.log_lines() if "orders/data" in ln]
    m.sighup()                                    # ... nor after SIGHUP, which forgets it
    assert errno_of(read_bytes, big) == errno.EFBIG
    assert len([ln for ln in emu.log_lines() if "orders/data" in ln]) == 1
    # a smaller dataset of the same mount reads whole
    small = read_bytes(m.path("SALES", "datasets", "customers", "data.csv"))
    assert small == api_text(emu, P + "/datasets/customers/data/?format=csv")


# ---------------------------------------------------------------------------------------
# Backups
# ---------------------------------------------------------------------------------------

def rsync_stats(src, dest):
    r = subprocess.run(["rsync", "-a", "--stats", src + "/", dest], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_second_backup_copies_nothing_after_a_run(emulator, mount_factory, tmp_path):
    """Default options: the backup holds no activity, and a scenario run between two
    backups (a new run, a new job) changes nothing in it."""
    m = mount_factory(emulator)
    dest = str(tmp_path / "backup")
    rsync_stats(m.mnt, dest)
    assert os.path.isdir(os.path.join(dest, *SCEN))
    assert not os.path.exists(os.path.join(dest, *SCEN, "runs"))
    assert not os.path.exists(os.path.join(dest, "SALES", "jobs"))
    assert not os.path.exists(os.path.join(dest, "SALES", "history"))
    runs = len(emulator.api_get(P + "/scenarios/DAILY_BUILD/get-last-runs?limit=20"))
    status, _ = emulator.request("POST", "/public/api/%s/scenarios/DAILY_BUILD/run" % P,
                                 body={}, key=emulator.admin_key)
    assert status == 200
    assert len(emulator.api_get(P + "/scenarios/DAILY_BUILD/get-last-runs?limit=20")) \
        == min(runs + 1, 20)
    m.sighup()  # nothing cached hides the run
    assert "Number of regular files transferred: 0" in rsync_stats(m.mnt, dest)


def test_with_activity_a_second_backup_copies_only_the_new_run(emulator_factory,
                                                               mount_factory, tmp_path):
    emu = emulator_factory()
    m = mount_factory(emu, options=["activity"])
    dest = str(tmp_path / "backup")
    rsync_stats(m.mnt, dest)
    runs = emu.api_get(P + "/scenarios/DAILY_BUILD/get-last-runs?limit=20")
    for r in runs:
        assert os.path.isfile(os.path.join(dest, *SCEN, "runs", r["runId"], "log.txt"))
    assert os.path.isfile(os.path.join(dest, "SALES", "history", "log.json"))
    assert "Number of regular files transferred: 0" in rsync_stats(m.mnt, dest)
    status, _ = emu.request("POST", "/public/api/%s/scenarios/DAILY_BUILD/run" % P,
                            body={}, key=emu.admin_key)
    assert status == 200
    new = emu.api_get(P + "/scenarios/DAILY_BUILD/get-last-runs?limit=20")[0]
    jobs = [j for j in emu.api_get(P + "/jobs/")
            if j["def"].get("scenarioRunId") == new["runId"]]
    m.sighup()
    r = subprocess.run(["rsync", "-a", "--itemize-changes", m.mnt + "/", dest],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    copied = {ln.split(" ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith(">f")}
    # the run's two files, a status and a log per job it ran, the scenario's
    # last-runs.json; nothing else
    scen = "/".join(SCEN)
    want = {"%s/runs/%s/%s" % (scen, new["runId"], f) for f in ("run.json", "log.txt")}
    want |= {"SALES/jobs/%s/%s" % (j["def"]["id"], f) for j in jobs
             for f in ("status.json", "log.txt")}
    want.add(scen + "/last-runs.json")
    assert jobs and copied == want, r.stdout
