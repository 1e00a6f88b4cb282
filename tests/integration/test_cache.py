"""Caching, counted in HTTP requests (exact counts from the emulator; never times)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import threading
import time

import pytest

from dssfs_harness import MORE_TYPES, api_path, expected_tree, read_bytes, project_names

API = "GET /public/api/"
SCHEMA = ("SALES", "datasets", "orders", "schema.json")


@pytest.fixture
def mounted(emulator, mount_factory):
    """Most tests here count the requests of single operations, so listings must not
    prefetch (prefetching is counted in test_walk.py)."""
    return emulator, mount_factory(emulator, options=["prefetch=0"])


def gets(emu):
    """The GET lines of the request log since the last reset, without the prefix."""
    lines = emu.log_lines()
    assert all(ln.startswith(API) for ln in lines), lines
    return [ln[len(API):] for ln in lines]


def test_cold_read_fetches_each_needed_resource_once(mounted):
    emu, m = mounted
    emu.reset_stats()
    data = read_bytes(m.path(*SCHEMA))
    assert data
    assert sorted(gets(emu)) == sorted(["projects/SALES/datasets/",
                                        "projects/SALES/datasets/orders/schema"])
    assert emu.request_count() == 2


def test_second_read_within_ttl_makes_no_request(mounted):
    emu, m = mounted
    first = read_bytes(m.path(*SCHEMA))
    os.stat(m.path(*SCHEMA))
    emu.reset_stats()
    for _ in range(3):
        assert read_bytes(m.path(*SCHEMA)) == first
        os.stat(m.path(*SCHEMA))
        os.listdir(m.path("SALES", "datasets"))
    subprocess.run(["cat", m.path(*SCHEMA)], check=True, capture_output=True)
    assert emu.request_count() == 0, emu.log_lines()


def test_cold_walk_gets_each_resource_once_and_warm_walk_none(emulator, mount_factory):
    expected = expected_tree(emulator)      # direct GETs, before the window
    m = mount_factory(emulator)
    emulator.reset_stats()
    r = subprocess.run(["tar", "cf", "-", "-C", m.mnt, "."], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    counts = collections.Counter(gets(emulator))
    dup = {k: n for k, n in counts.items() if n > 1}
    assert not dup, "resources fetched more than once on a cold walk: %s" % dup
    # projects/ was fetched at start-up and is still fresh
    assert set(counts) == expected.walked()
    assert emulator.request_count() == len(expected.walked())

    emulator.reset_stats()
    r = subprocess.run(["tar", "cf", "-", "-C", m.mnt, "."], capture_output=True, timeout=120)
    assert r.returncode == 0
    assert emulator.request_count() == 0, emulator.log_lines()


def test_after_ttl_the_resource_is_fetched_again(emulator, mount_factory):
    m = mount_factory(emulator, options=["cache_ttl=1", "attr_timeout=0.5"])
    first = read_bytes(m.path(*SCHEMA))
    emulator.reset_stats()
    time.sleep(2.0)  # > cache_ttl + attr_timeout: every cached thing is stale
    assert read_bytes(m.path(*SCHEMA)) == first
    assert sorted(gets(emulator)) == sorted(["projects/", "projects/SALES/datasets/",
                                             "projects/SALES/datasets/orders/schema"])
    emulator.reset_stats()
    assert read_bytes(m.path(*SCHEMA)) == first
    assert emulator.request_count() == 0


def test_ttl_expiry_with_kernel_entries_still_valid_refetches_only_the_file(emulator,
                                                                            mount_factory):
    m = mount_factory(emulator, options=["cache_ttl=1", "attr_timeout=60"])
    first = read_bytes(m.path(*SCHEMA))
    emulator.reset_stats()
    time.sleep(1.5)
    assert read_bytes(m.path(*SCHEMA)) == first
    # the file's document and the listing its time comes from (README, Times); with
    # default_permissions the kernel may also check /SALES, whose time comes from the
    # project listing
    got = gets(emulator)
    assert got.count("projects/") <= 1, got
    assert sorted(g for g in got if g != "projects/") == [
        "projects/SALES/datasets/", "projects/SALES/datasets/orders/schema"]


def _concurrently(n, fn):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(i):
        try:
            barrier.wait(timeout=30)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "reads hung"
    assert not errors, errors
    return results


def test_twenty_concurrent_first_reads_share_one_get(emulator_factory, mount_factory):
    emu = emulator_factory(args=["--latency-ms", "200"])
    m = mount_factory(emu)
    emu.reset_stats()
    results = _concurrently(20, lambda i: read_bytes(m.path(*SCHEMA)))
    assert len(set(results)) == 1 and results[0]
    counts = collections.Counter(gets(emu))
    assert counts["projects/SALES/datasets/orders/schema"] == 1, counts
    assert counts["projects/SALES/datasets/"] == 1, counts
    assert emu.request_count() == 2


def test_concurrent_reads_of_files_of_one_resource_share_one_get(emulator_factory,
                                                                 mount_factory):
    """recipe.json and payload.py are two files of GET recipes/X; different names are
    looked up in parallel, so the sharing is dssfs's, not the kernel's."""
    emu = emulator_factory(args=["--latency-ms", "200"])
    m = mount_factory(emu, options=["prefetch=0"])
    rdir = m.path("SALES", "recipes", "compute_orders_enriched")
    os.listdir(m.path("SALES", "recipes"))   # the list is fetched before the window
    emu.reset_stats()
    names = ["recipe.json", "payload.py"]

    def work(i):
        p = os.path.join(rdir, names[i % 2])
        if i % 4 < 2:
            return os.stat(p).st_size
        return len(read_bytes(p))

    _concurrently(20, work)
    assert gets(emu) == [api_path("projects", "SALES", "recipes", "compute_orders_enriched")]


def test_sighup_drops_the_cache(emulator, mount_factory):
    # Long kernel timeouts: only dssfs's own cache is under test.
    m = mount_factory(emulator, options=["attr_timeout=60", "prefetch=0"])
    first = read_bytes(m.path(*SCHEMA))
    os.listdir(m.path("SALES", "datasets"))
    emulator.reset_stats()
    assert read_bytes(m.path(*SCHEMA)) == first
    assert emulator.request_count() == 0
    m.sighup()
    assert read_bytes(m.path(*SCHEMA)) == first
    # the file's document, the listing its time comes from (README, Times), and the
    # project listing: with default_permissions the kernel checks each folder on the
    # path, and /SALES takes its time from its item in the project listing
    assert sorted(gets(emulator)) == ["projects/", "projects/SALES/datasets/",
                                      "projects/SALES/datasets/orders/schema"]
    emulator.reset_stats()
    os.listdir(m.path("SALES", "datasets"))
    assert read_bytes(m.path(*SCHEMA)) == first
    # at most the project listing (the SALES folder's time), never those again
    assert set(gets(emulator)) <= {"projects/"}


def _grow_variables(emu):
    var = emu.api_get("projects/SALES/variables/")
    var["standard"]["dssfs_it_marker"] = "changed-on-server " * 4
    status, body = emu.request("PUT", "/public/api/projects/SALES/variables/", body=var,
                               key=emu.admin_key)
    assert status == 200, body
    return var


def test_a_changed_server_object_is_not_seen_within_the_ttl(emulator, mount_factory):
    m = mount_factory(emulator)
    p = m.path("SALES", "variables.json")
    before = read_bytes(p)
    _grow_variables(emulator)
    assert read_bytes(p) == before


@pytest.mark.parametrize("how", ["sighup", "ttl"])
def test_after_refetch_a_grown_document_is_read_whole(emulator, mount_factory, how):
    # attr_timeout=60 makes the kernel-attribute window deterministic; with the default
    # of 1 s the same happens whenever the refetch falls within a second of a stat.
    opts = ["attr_timeout=60"] + (["cache_ttl=1"] if how == "ttl" else [])
    m = mount_factory(emulator, options=opts)
    p = m.path("SALES", "variables.json")
    before = read_bytes(p)
    # `stat` refreshes the kernel's attributes (size) of the file, valid attr_timeout s
    subprocess.run(["stat", p], check=True, capture_output=True)
    var = _grow_variables(emulator)
    if how == "sighup":
        m.sighup()
    else:
        time.sleep(1.5)
    r = subprocess.run(["cat", p], capture_output=True, timeout=30)
    assert r.returncode == 0
    assert len(r.stdout) > len(before)
    assert json.loads(r.stdout) == var


def test_root_listing_after_mount_costs_nothing(mounted):
    """The projects list fetched at start-up serves the first `ls` of the root."""
    emu, m = mounted
    emu.reset_stats()
    assert project_names(m.mnt) == ["HR_ANALYTICS", "MARKETING", "SALES"]
    os.stat(m.path("SALES"))
    assert emu.request_count() == 0, emu.log_lines()


def test_ls_l_of_a_project_fetches_its_documents_and_the_lists_of_its_types(mounted):
    """Its five documents, and the list of each object type a DSS may lack (a folder is
    shown only where DSS serves its list): one GET each."""
    emu, m = mounted
    emu.reset_stats()
    r = subprocess.run(["ls", "-l", m.path("SALES")], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lists = ["projects/SALES/" + ty["list"] for ty in MORE_TYPES]
    assert sorted(gets(emu)) == sorted(["projects/SALES/metadata", "projects/SALES/settings",
                                        "projects/SALES/permissions",
                                        "projects/SALES/variables/",
                                        "projects/SALES/tags"] + lists)


def test_names_that_cannot_exist_cost_no_request(mounted):
    emu, m = mounted
    emu.reset_stats()
    for parts in (("SALES", "notes.txt"), ("SALES", "datasets", "orders", "x.json"),
                  ("SALES", ".git"), ("SALES", "recipes", "r", "payload"),
                  ("SALES", "scenarios", "S", "script.sh")):
        assert not os.path.exists(m.path(*parts))
    # only the lists needed to resolve the existing parents: none for the first and third,
    # datasets/ for the second, recipes/ and scenarios/ for the last two
    assert sorted(gets(emu)) == sorted(["projects/SALES/datasets/",
                                        "projects/SALES/recipes/",
                                        "projects/SALES/scenarios/"])


def test_a_missing_object_costs_one_list_request(mounted):
    emu, m = mounted
    emu.reset_stats()
    assert not os.path.exists(m.path("SALES", "datasets", "nope"))
    assert not os.path.exists(m.path("SALES", "datasets", "nope"))
    assert not os.path.exists(m.path("SALES", "datasets", "nope2"))
    assert gets(emu) == ["projects/SALES/datasets/"]


def test_recipe_files_share_the_recipe_document(mounted):
    emu, m = mounted
    emu.reset_stats()
    d = m.path("MARKETING", "recipes", "compute_campaign_stats")
    names = sorted(os.listdir(d))
    assert names == ["payload.R", "recipe.json"]
    for n in names:
        read_bytes(os.path.join(d, n))
        os.stat(os.path.join(d, n))
    assert sorted(gets(emu)) == sorted([
        "projects/MARKETING/recipes/",
        "projects/MARKETING/recipes/compute_campaign_stats"])


def test_sighup_during_concurrent_reads_never_gives_wrong_bytes(emulator, mount_factory):
    expected = expected_tree(emulator)
    files = sorted(expected.files)[:60]
    m = mount_factory(emulator)
    want = {rel: read_bytes(m.path(rel)) for rel in files}
    stop = threading.Event()
    errors = []

    def reader(k):
        i = k
        while not stop.is_set():
            rel = files[i % len(files)]
            try:
                if read_bytes(m.path(rel)) != want[rel]:
                    errors.append("wrong bytes for " + rel)
            except OSError as e:
                errors.append("%s: %s" % (rel, e))
            i += 7

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            m.sighup()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:10]
