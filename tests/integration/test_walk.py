"""Whole-tree walks as backups run them: tar, rsync, diff -r; prefetch and the export.

Request counts are exact (from the emulator); times are never asserted (the walk
benchmark, tests/bench/walk_bench.py, measures them).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import zipfile

import pytest

from dssfs_harness import MORE_TYPES, expected_tree, read_bytes, project_names

API = "GET /public/api/"
GENERATED = ["--generate", "3,8"]


def gets(emu):
    lines = emu.log_lines()
    assert all(ln.startswith(API) for ln in lines), lines
    return [ln[len(API):] for ln in lines]


def snapshot(root):
    """{relative path: (size, mtime_ns, inode)} of every file and folder under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size if not os.path.isdir(p) else 0,
                                             st.st_mtime_ns, st.st_ino)
    return out


def rsync(src, dst):
    """(number of regular files transferred, their paths)."""
    r = subprocess.run(["rsync", "-a", "-i", "--stats", src + "/", dst],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = re.search(r"Number of regular files transferred: ([\d,]+)", r.stdout)
    sent = sorted(ln.split(" ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith(">f"))
    return int(m.group(1).replace(",", "")), sent


def test_tar_of_the_whole_mount_prints_no_warning(emulator_factory, mount_factory):
    emu = emulator_factory(args=GENERATED)
    m = mount_factory(emu)
    r = subprocess.run(["tar", "cf", "-", "-C", m.mnt, "."], capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    # again, across a cache refresh of everything (nothing changed on the server)
    m.sighup()
    r2 = subprocess.run(["tar", "cf", "-", "-C", m.mnt, "."], capture_output=True, timeout=300)
    assert r2.returncode == 0 and r2.stderr == b"", r2.stderr


def test_rsync_twice_copies_nothing_then_exactly_what_changed(emulator_factory, mount_factory,
                                                             tmp_path):
    emu = emulator_factory(args=GENERATED)
    m = mount_factory(emu)
    dst = str(tmp_path / "backup")
    n_first, _ = rsync(m.mnt, dst)
    assert n_first > 0
    r = subprocess.run(["diff", "-r", m.mnt, dst], capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stdout == b"", r.stdout[:2000]

    n_second, _ = rsync(m.mnt, dst)
    assert n_second == 0

    # change two objects on the server; after a refresh exactly their files move
    ds = emu.api_get("projects/GEN001/datasets/ds_000")
    ds["description"] = "changed for the backup test"
    assert emu.request("PUT", "/public/api/projects/GEN001/datasets/ds_000", body=ds,
                       key=emu.admin_key)[0] == 200
    var = emu.api_get("projects/GEN002/variables/")
    var["standard"]["changed"] = True
    assert emu.request("PUT", "/public/api/projects/GEN002/variables/", body=var,
                       key=emu.admin_key)[0] == 200
    before = snapshot(m.mnt)
    m.sighup()
    after = snapshot(m.mnt)
    moved = sorted(p for p, (size, mtime, _) in after.items()
                   if os.path.isfile(os.path.join(m.mnt, p)) and before[p][:2] != (size, mtime))
    n_third, sent = rsync(m.mnt, dst)
    # rsync sends exactly the files whose size or time changed: the dataset's files
    # (they take its new versionTag time) and the project's files (the project's
    # version moved with its variables), nothing else.
    assert sent == moved and n_third == len(moved)
    assert "GEN001/datasets/ds_000/settings.json" in sent
    assert "GEN002/variables.json" in sent
    assert all(p.startswith(("GEN001/datasets/ds_000/", "GEN002/")) and
               p.count("/") in (1, 3) for p in sent), sent
    r = subprocess.run(["diff", "-r", m.mnt, dst], capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stdout == b""
    n_fourth, _ = rsync(m.mnt, dst)
    assert n_fourth == 0


def test_sizes_times_and_inodes_survive_a_cache_refresh(emulator_factory, mount_factory):
    emu = emulator_factory(args=GENERATED)
    m = mount_factory(emu)
    before = snapshot(m.mnt)
    m.sighup()
    after = snapshot(m.mnt)
    assert before == after


def test_cold_walk_one_get_per_resource_warm_walk_none(emulator_factory, mount_factory):
    emu = emulator_factory(args=GENERATED)
    expected = expected_tree(emu)
    m = mount_factory(emu)                       # default: prefetch on
    emu.reset_stats()
    r = subprocess.run(["tar", "cf", "-", "-C", m.mnt, "."], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    counts = collections.Counter(gets(emu))
    assert not {k: n for k, n in counts.items() if n > 1}
    assert set(counts) == expected.walked()      # nothing the walk did not need
    files = sum(len(fs) for _, _, fs in os.walk(m.mnt))
    # about one GET per file, plus the lists of what may be empty (the generated
    # projects have none of these): in each project the list of each object type and
    # the library, and each dataset's list of statistics worksheets
    projects = project_names(m.mnt)
    datasets = sum(len(os.listdir(os.path.join(m.mnt, p, "datasets"))) for p in projects)
    assert len(counts) <= 1.05 * files + len(projects) * (len(MORE_TYPES) + 1) + datasets
    emu.reset_stats()
    subprocess.run(["tar", "cf", "/dev/null", "-C", m.mnt, "."], check=True, timeout=300)
    subprocess.run(["ls", "-lR", m.mnt], check=True, capture_output=True, timeout=300)
    subprocess.run(["find", m.mnt], check=True, capture_output=True, timeout=300)
    assert emu.request_count() == 0


def test_a_listing_prefetches_in_parallel_within_the_bound(emulator_factory, mount_factory):
    emu = emulator_factory(args=GENERATED + ["--latency-ms", "100"])
    m = mount_factory(emu, options=["prefetch=4"])
    os.listdir(m.path("GEN001", "datasets"))     # the list itself, then its children
    # what `ls -l` of every dataset folder needs is fetched without being asked
    want = {"projects/GEN001/datasets/ds_%03d%s" % (i, suffix)
            for i in range(8) for suffix in ("", "/schema", "/metadata", "/partitions",
                                             "/metrics/last/NP")}
    emu.reset_stats()
    for i in range(8):
        subprocess.run(["ls", "-l", m.path("GEN001", "datasets", "ds_%03d" % i)], check=True,
                       capture_output=True, timeout=60)
    # all fetched once; those not yet in flight when ls asked were fetched by ls
    counts = collections.Counter(gets(emu))
    assert not {k: n for k, n in counts.items() if n > 1}
    assert set(counts) <= want
    stats = emu.stats()
    assert 2 <= stats["max_in_flight"] <= 4 + 1   # the prefetch bound, plus ls itself


def test_entering_a_project_prefetches_the_next_one_behind_it(emulator_factory, mount_factory):
    """A walk goes on into the next project: what that one holds is queued behind what
    the walk needs now, so the prefetch queue does not run dry at each project's end
    (it did: at 10 ms a cold tar waited there for the next project's first listings).
    Exactly one project ahead, each resource once."""
    from test_stats import quiet_stats
    emu = emulator_factory(args=GENERATED)
    m = mount_factory(emu)
    os.listdir(m.mnt)
    quiet_stats(emu, m)
    emu.reset_stats()
    os.listdir(m.path("GEN001"))
    quiet_stats(emu, m)
    counts = collections.Counter(gets(emu))
    assert not {k: n for k, n in counts.items() if n > 1}

    def of(key):
        prefix = "projects/%s/" % key
        return {u[len(prefix):] for u in counts if u.startswith(prefix)}
    assert not of("GEN003")
    assert not [u for u in counts if not u.startswith(("projects/GEN001/", "projects/GEN002/"))]
    # the next project: what entering it queues, its datasets' documents included
    assert of("GEN002") == of("GEN001")
    assert "datasets/ds_007/schema" in of("GEN002")
    # entering the next one then fetches nothing of its own, only the one after it
    emu.reset_stats()
    os.listdir(m.path("GEN002"))
    quiet_stats(emu, m)
    assert {u.split("/")[1] for u in gets(emu)} == {"GEN003"}


def test_a_folder_lists_and_prefetches_in_name_order(emulator_factory, mount_factory):
    """A folder lists its objects in name order (bytes), whatever DSS's order, and the
    prefetch fetches them in that order: the order `ls`, `rsync` and tar (readdir) read
    them in.  In DSS's order, `ls -lR` of 2,000 datasets ds_000..ds_1999 read ds_100,
    ds_1000, ds_1001 while the prefetch had filled its room with ds_101 onwards, and it
    then waited for each file in turn."""
    from test_stats import quiet_stats
    emu = emulator_factory(args=["--generate", "1,1001"])
    m = mount_factory(emu, options=["prefetch=1", "cache_max=256"])
    dss = [d["name"] for d in emu.api_get("projects/GEN001/datasets/")]
    assert dss != sorted(dss)                    # ds_999, then ds_1000
    emu.reset_stats()
    names = os.listdir(m.path("GEN001", "datasets"))
    assert names == sorted(dss, key=lambda n: n.encode())
    quiet_stats(emu, m)                          # one prefetch thread: in queue order
    fetched = [u.split("/")[3] for u in gets(emu)
               if re.fullmatch(r"projects/GEN001/datasets/[^/]+", u)]
    assert fetched == names


def test_prefetch_can_be_turned_off(emulator_factory, mount_factory):
    emu = emulator_factory(args=GENERATED)
    m = mount_factory(emu, options=["prefetch=0"])
    emu.reset_stats()
    os.listdir(m.path("GEN001", "datasets"))
    assert gets(emu) == ["projects/GEN001/datasets/"]


def test_a_small_cache_stays_correct(emulator_factory, mount_factory):
    """Memory is bounded by cache_max whatever the instance size: with a tiny cap the
    walk refetches instead of keeping everything, and still reads the right bytes."""
    # about 1.7 MiB of cache cost (3x the bodies), against a cap of 1 MiB
    emu = emulator_factory(args=["--generate", "4,30"])
    m = mount_factory(emu, options=["cache_max=1"])
    expected = expected_tree(emu)

    def walk():
        bad = []
        for rel, exp in sorted(expected.files.items()):
            p = os.path.join(m.mnt, rel)
            data = read_bytes(p)
            if len(data) != os.stat(p).st_size:
                bad.append("%s: st_size %d, %d bytes read" % (rel, os.stat(p).st_size, len(data)))
            if exp.kind == "text":
                if data != exp.value.encode("utf-8"):
                    bad.append("%s: text differs from the API string" % rel)
            # json.dumps keeps the key order: the values and their order must match
            elif json.dumps(json.loads(data)) != json.dumps(exp.value):
                bad.append("%s: JSON differs from GET %s" % (rel, exp.endpoint))
        assert not bad, "\n".join(bad[:40])

    walk()
    # a second walk refetches what the cap dropped (everything would still be
    # cached without a cap), and reads the same bytes
    emu.reset_stats()
    walk()
    counts = collections.Counter(gets(emu))
    assert set(counts) <= expected.resources
    assert len(counts) > len(expected.resources) // 2, "the cap dropped almost nothing"


def test_a_folder_larger_than_the_cache_is_walked_with_each_resource_fetched_once(
        emulator_factory, mount_factory):
    """2,000 datasets in one folder, cache_max=4 (MiB): the listing (2.4 MB of JSON, ~25 MB
    parsed) is kept as its index alone, and prefetch runs a window ahead of the walk that
    the cache holds, so a cold `tar` GETs every resource exactly once.  Before: the
    listing was dropped right after each use and fetched again for every lookup, and
    prefetched documents were evicted before the walk reached them."""
    emu = emulator_factory(args=["--generate", "1,2000"])
    # (a TTL the walk cannot outlast, even under sanitizers: only the cap is tested)
    m = mount_factory(emu, options=["cache_max=4", "cache_ttl=900"])
    emu.reset_stats()
    # (tar reads the files only when it writes somewhere else than /dev/null)
    r = subprocess.run("tar cf - -C %s GEN001 | wc -c" % m.mnt, shell=True, capture_output=True,
                       timeout=900)
    assert r.returncode == 0 and int(r.stdout) > 2000 * 5 * 512, r.stderr.decode()[-2000:]
    counts = collections.Counter(gets(emu))
    twice = sorted(k for k, n in counts.items() if n > 1)
    assert not twice, "%d resources fetched more than once, e.g. %s" % (len(twice), twice[:5])
    assert counts["projects/GEN001/datasets/"] == 1
    # every dataset's five documents (and its worksheets' list), each once
    per_dataset = collections.Counter(
        re.sub(r"datasets/[^/]+", "datasets/X", k) for k in counts if "/datasets/ds_" in k)
    assert set(per_dataset.values()) == {2000}, per_dataset


# --- the project export ----------------------------------------------------------------

def test_export_zip_is_readable_by_name_and_never_listed(emulator, mount_factory, tmp_path):
    m = mount_factory(emulator, options=["prefetch=0"])   # only the export is counted
    p = m.path("SALES", "export.zip")
    assert "export.zip" not in os.listdir(m.path("SALES"))
    emulator.reset_stats()
    st = os.stat(p)
    copy = tmp_path / "SALES.zip"
    subprocess.run(["cp", p, str(copy)], check=True, timeout=60)
    data = copy.read_bytes()
    assert len(data) == st.st_size > 0
    assert emulator.log_lines() == ["POST /public/api/projects/SALES/export"]
    status, direct = emulator.request("POST", "/public/api/projects/SALES/export", body={},
                                      key=emulator.admin_key)
    assert status == 200 and direct == data
    names = zipfile.ZipFile(copy).namelist()
    assert any(n.startswith("project_config/") for n in names)
    # read-only, and not part of a walk
    assert st.st_mode & 0o222 == 0
    r = subprocess.run(["tar", "tf", "-"], input=subprocess.run(
        ["tar", "cf", "-", "-C", m.mnt, "SALES"], capture_output=True, timeout=120).stdout,
        capture_output=True, timeout=60)
    assert b"export.zip" not in r.stdout


@pytest.mark.expect_dssfs_errors
def test_export_of_a_missing_project_is_enoent(mounted):
    _, m = mounted
    assert not os.path.exists(m.path("NOPE", "export.zip"))
