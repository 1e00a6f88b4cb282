#!/usr/bin/python3
"""Benchmark of dssfs at enterprise scale (README, "Benchmark").

Three kinds of runs, each against the DSS emulator with a generated instance
(--generate P,D) and dssfs with its default options (-o only with --opts):

  sizes     one project of N datasets, for N in --sizes (default 500,5000,20000),
            at --latency-ms (default 0): a cold tar c of the whole mount; on a
            fresh mount ls -l of datasets/ twice in a row (cold, then again); on
            a fresh mount os.stat of every datasets/*/settings.json (one process);
            on a fresh mount ls -lR of the project folder; and curl --parallel
            over the URLs the cold tar fetched.  Then the growth between
            consecutive sizes: time(N2)/time(N1) next to N2/N1, and normalised
            to a 10x step: ratio ** (log 10 / log(N2/N1)).
  instance  the whole-instance cold tar c of --instance PxD (default 200x50).
  ratios    cold tar c against curl --parallel --parallel-max P over exactly the
            URLs the cold walk fetched, at 10 ms (20x50) and 100 ms (4x25).

Each measure prints wall seconds, the requests the emulator answered, requests
per object, dssfs's peak RSS (VmHWM of the dssfs process of that mount), and the
CPU seconds dssfs and the emulator used during the command (the emulator is one
Python process: when its CPU seconds come near the wall time, it is what limits
the measure).  Files are counted with find -type f on a first mount, with a
cache large enough to keep everything (COUNT_OPTS; it is not measured), then
dssfs is mounted again, with the options measured, for the cold walk.  Nothing is asserted: the goals are printed
next to the figures.

  tests/bench/scale_bench.py [--sizes 500,5000,20000] [--instance 200x50]
                             [--ratios [20x50@10,4x25@100]] [--latency-ms 0]
                             [--dssfs build/dssfs] [--opts OPTS] [--prefetch 16]
                             [--timeout 900] [--no-curl] [--tar-read] [--json out.json]

Without --sizes, --instance or --ratios, all three run with their defaults; with
any of them, only those given.
"""

import argparse
import collections
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from walk_bench import ROOT, Run, cpu_seconds  # noqa: E402

DEFAULT_SIZES = "500,5000,20000"
DEFAULT_INSTANCE = "200x50"
DEFAULT_RATIOS = "20x50@10,4x25@100"

# One process that stats every datasets/*/settings.json of a project.
STAT_SCRIPT = r"""
import os, sys
d = sys.argv[1]
n = 0
for name in os.listdir(d):
    os.stat(os.path.join(d, name, "settings.json"))
    n += 1
print(n)
"""

LEGEND = """
columns: seconds = wall time of the command; requests = requests the emulator answered
while it ran; +after = requests after it returned, until the emulator was quiet for
0.5 s (dssfs's prefetch); objects = files of the mount for walks, N for the datasets/
measures; req/obj = requests / objects; dssfs RSS = peak RSS (VmHWM) of the dssfs
process of that mount so far; dssfs cpu, emu cpu = CPU seconds of dssfs and of the
emulator (one Python process) during the command.  Each datasets/ and ls -lR measure
starts on a fresh mount, except "(again)", run right after the cold one (its +after
counts what both left behind).  (GET U x K): the URL fetched most often during the
command, when more than twice.
"""

# Goals of the issue (printed next to the figures, not asserted).
GOAL_GROWTH_PER_10X = 12.0
GOAL_REQ_PER_FILE = 1.02
GOAL_RSS_MIB = 96.0
GOAL_RSS_FILES = 100000
GOAL_TAR_OVER_CURL = 1.10


def project_key(n_projects, i):
    """The key the emulator's --generate gives project i (1-based)."""
    return "GEN%0*d" % (max(3, len(str(n_projects))), i)


def prefetch_of(args):
    """The parallel baseline's concurrency: prefetch=N of --opts, else --prefetch."""
    for opt in (args.opts or "").split(","):
        name, _, value = opt.partition("=")
        if name.strip() == "prefetch" and value.strip().isdigit():
            return int(value)
    return args.prefetch


def tar_cmd(args, mnt):
    if args.tar_read:
        # GNU tar does not read the files when the archive is /dev/null: through a
        # pipe it does (open, read, release of every file).
        return "tar cf - -C '%s' . | cat > /dev/null" % mnt
    return ["tar", "cf", "/dev/null", "-C", mnt, "."]


def tar_label(args):
    return "cold tar c | cat" if args.tar_read else "cold tar c"


# The mount that counts the files (not measured) keeps everything it fetched: with
# the default cache_max, a listing larger than the cache is fetched again at every
# lookup in its folder, and counting 1 x 20,000 took 14 minutes.
COUNT_OPTS = "cache_max=4096,cache_ttl=86400"


def new_run(args, projects, datasets, latency_ms):
    opts = ["-o", args.opts] if args.opts else []
    return Run(args.dssfs, projects, datasets, latency_ms, opts, args.timeout)


def start(run, res):
    """Starts the emulator; counts the files on a first mount (-o COUNT_OPTS), then
    mounts with the options measured, so that the next walk is cold."""
    run.start_emulator()
    res["emulator_start_s"] = run.emulator_start_s
    res["emulator_rss_after_start_mib"] = run.peak_rss_mib(run.emu)
    measured = run.mount_opts
    run.mount_opts = measured + ["-o", COUNT_OPTS]
    try:
        run.mount()
        t0 = time.monotonic()
        res["files"] = run.count_files()
        res["count_seconds"] = time.monotonic() - t0
        res["count_requests"] = run.requests()
    finally:
        run.mount_opts = measured
    run.remount()


def settle(run, quiet=0.5, cap=600.0):
    """Waits until the emulator has answered no request for `quiet` seconds (dssfs's
    prefetch may go on after a command returns); the requests since the last
    reset-stats."""
    last = run.requests()
    t0 = quiet_since = time.monotonic()
    while time.monotonic() - t0 < cap:
        time.sleep(0.1)
        n = run.requests()
        if n != last:
            last, quiet_since = n, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            break
    return last


def measure(run, res, label, cmd, objects, wait=True):
    """One command, measured; then (with wait) the requests dssfs made after it
    returned, until the emulator is quiet ("requests_after").  Returns the row and
    the URLs fetched while the command ran."""
    row, _, log0 = run.timed(label, cmd, objects, check=False)
    urls = run.urls_since(log0)
    row["objects"] = objects
    if urls:
        top, count = collections.Counter(urls).most_common(1)[0]
        if count > 2:
            row["most_fetched"] = {"url": top[len(run.url):], "times": count}
    row["requests_after"] = (settle(run, cap=min(600.0, run.timeout or 600.0))
                             - row["requests"] if wait else None)
    res["rows"].append(row)
    return row, urls


def curl_parallel(run, res, urls, parallel, objects):
    """curl --parallel over urls, as a row like the others."""
    cpu0 = cpu_seconds(run.emu)
    seconds, n = run.curl_baseline(urls, parallel)
    row = {"what": "curl --parallel %d" % parallel, "seconds": seconds,
           "timeout": seconds is None, "requests": n, "objects": objects,
           "requests_per_file": n / objects if objects else 0.0, "rc": 0,
           "peak_rss_mib": None, "dssfs_cpu_s": None,
           "emulator_cpu_s": cpu_seconds(run.emu) - cpu0, "urls": len(urls)}
    res["rows"].append(row)
    return row


def finish(run, res):
    """Records the emulator's and dssfs's last state, then stops everything."""
    try:
        if run.emu:
            res["emulator_peak_rss_mib"] = run.peak_rss_mib(run.emu)
        res["dssfs_stderr"] = _stderr_tail(run.dssfs_err)
    finally:
        run.stop()


def _stderr_tail(path, keep=12):
    """dssfs's stderr over the whole run, without its 'info: mounted' lines."""
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return []
    lines = [l for l in lines if not (": info: mounted " in l or ": info: unmounted" in l)]
    return lines[-keep:] + (["(%d lines in all)" % len(lines)] if len(lines) > keep else [])


def size_run(args, n):
    res = {"kind": "size", "n": n, "projects": 1, "datasets": n,
           "latency_ms": args.latency_ms, "rows": []}
    run = new_run(args, 1, n, args.latency_ms)
    print("... 1 x %d: running" % n, file=sys.stderr, flush=True)
    try:
        start(run, res)
        nfiles = res["files"]
        proj = os.path.join(run.mnt, project_key(1, 1))
        dsets = os.path.join(proj, "datasets")
        cold, urls = measure(run, res, tar_label(args) + ", whole mount",
                             tar_cmd(args, run.mnt), nfiles)

        run.remount()
        # Twice in a row: the second within the cache TTL of the first.
        measure(run, res, "ls -l datasets/ (cold)", ["ls", "-l", dsets + "/"], n, wait=False)
        measure(run, res, "ls -l datasets/ (again)", ["ls", "-l", dsets + "/"], n)
        run.remount()
        measure(run, res, "stat */settings.json (cold)",
                ["/usr/bin/python3", "-c", STAT_SCRIPT, dsets], n)
        run.remount()
        measure(run, res, "ls -lR project (cold)", ["ls", "-lR", proj], nfiles)
        if args.curl and not cold["timeout"]:
            curl_parallel(run, res, urls, prefetch_of(args), nfiles)
    finally:
        finish(run, res)
    return res


def instance_run(args, projects, datasets):
    res = {"kind": "instance", "projects": projects, "datasets": datasets,
           "latency_ms": args.latency_ms, "rows": []}
    run = new_run(args, projects, datasets, args.latency_ms)
    print("... instance %d x %d: running" % (projects, datasets), file=sys.stderr, flush=True)
    try:
        start(run, res)
        cold, urls = measure(run, res, tar_label(args) + ", whole mount",
                             tar_cmd(args, run.mnt), res["files"])
        if args.curl and not cold["timeout"]:
            curl_parallel(run, res, urls, prefetch_of(args), res["files"])
    finally:
        finish(run, res)
    return res


def ratio_run(args, projects, datasets, latency_ms):
    res = {"kind": "ratio", "projects": projects, "datasets": datasets,
           "latency_ms": latency_ms, "rows": []}
    run = new_run(args, projects, datasets, latency_ms)
    print("... ratio %d x %d at %g ms: running" % (projects, datasets, latency_ms),
          file=sys.stderr, flush=True)
    try:
        start(run, res)
        cold, urls = measure(run, res, tar_label(args) + ", whole mount",
                             tar_cmd(args, run.mnt), res["files"])
        if not cold["timeout"]:
            curl_parallel(run, res, urls, prefetch_of(args), res["files"])
    finally:
        finish(run, res)
    return res


# --- printing -----------------------------------------------------------------------------

def fmt_s(row):
    if row.get("timeout"):
        return "timeout"
    return "%.2f" % row["seconds"]


def fmt_opt(value, pattern, none="-"):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return pattern % value


def tar_over_curl(res):
    tar = res["rows"][0]
    curl = next((r for r in res["rows"] if r["what"].startswith("curl")), None)
    if not curl or tar.get("timeout") or curl.get("timeout") or not curl["seconds"]:
        return None
    return tar["seconds"] / curl["seconds"]


def print_run(res, args):
    if res["kind"] == "size":
        title = "1 project x %d datasets" % res["n"]
    else:
        title = "%d projects x %d datasets" % (res["projects"], res["datasets"])
    print()
    files = "{:,}".format(res["files"]) if res.get("files") is not None else "?"
    print("== %s, %s files, latency %g ms, dssfs options: %s"
          % (title, files, res["latency_ms"], args.opts or "(default)"))
    print("   emulator: started in %s s, RSS %s MiB after start, peak %s MiB; files counted "
          "(find -type f, -o %s) in %s s, %s requests"
          % (fmt_opt(res.get("emulator_start_s"), "%.2f"),
             fmt_opt(res.get("emulator_rss_after_start_mib"), "%.0f"),
             fmt_opt(res.get("emulator_peak_rss_mib"), "%.0f"), COUNT_OPTS,
             fmt_opt(res.get("count_seconds"), "%.2f"), fmt_opt(res.get("count_requests"), "%d")))
    print("   %-30s %9s %9s %7s %8s %8s %10s %9s %8s"
          % ("measure", "seconds", "requests", "+after", "objects", "req/obj", "dssfs RSS",
             "dssfs cpu", "emu cpu"))
    for r in res["rows"]:
        note = ""
        if r.get("rc"):
            note = "  (exit %s: %s)" % (r["rc"], r.get("stderr", "").strip()[-120:])
        if r.get("urls") is not None:
            note = "  (the %d URLs of the cold tar)" % r["urls"]
        if r.get("most_fetched"):
            note += "  (GET %s x %d)" % (r["most_fetched"]["url"], r["most_fetched"]["times"])
        print("   %-30s %9s %9d %7s %8d %8.3f %10s %9s %8s%s"
              % (r["what"], fmt_s(r), r["requests"], fmt_opt(r.get("requests_after"), "%d"),
                 r["objects"] or 0,
                 r["requests_per_file"], fmt_opt(r.get("peak_rss_mib"), "%.1f MiB"),
                 fmt_opt(r.get("dssfs_cpu_s"), "%.2f"), fmt_opt(r.get("emulator_cpu_s"), "%.2f"),
                 note))
    ratio = tar_over_curl(res)
    if ratio is not None:
        print("   cold tar / curl --parallel: %.3f" % ratio)
    if res.get("dssfs_stderr"):
        print("   dssfs stderr (last lines):")
        for line in res["dssfs_stderr"]:
            print("     " + line)
    sys.stdout.flush()


def growth(sizes):
    """Rows (measure, N1, N2, time ratio, size ratio, per 10x) between consecutive sizes."""
    out = []
    for a, b in zip(sizes, sizes[1:]):
        k = b["n"] / a["n"]
        for ra in a["rows"]:
            rb = next((r for r in b["rows"] if r["what"] == ra["what"]), None)
            if rb is None or ra.get("timeout") or rb.get("timeout") or not ra["seconds"]:
                t = None
            else:
                t = rb["seconds"] / ra["seconds"]
            per10 = t ** (math.log(10) / math.log(k)) if t and k > 1 else None
            out.append({"what": ra["what"], "n1": a["n"], "n2": b["n"], "size_ratio": k,
                        "time_ratio": t, "per_10x": per10,
                        "requests_ratio": (rb["requests"] / ra["requests"]
                                           if rb and ra["requests"] else None)})
    return out


def print_growth(rows):
    print()
    print("== growth between consecutive sizes (goal 1: at most %g x the time per 10 x "
          "the objects)" % GOAL_GROWTH_PER_10X)
    print("   %-30s %13s %10s %10s %10s %10s"
          % ("measure", "N1 -> N2", "N2/N1", "time x", "per 10x", "requests x"))
    for g in rows:
        print("   %-30s %13s %10.1f %10s %10s %10s"
              % (g["what"], "%d -> %d" % (g["n1"], g["n2"]), g["size_ratio"],
                 fmt_opt(g["time_ratio"], "%.2f", "timeout"), fmt_opt(g["per_10x"], "%.2f"),
                 fmt_opt(g["requests_ratio"], "%.2f")))


def print_goals(results, growth_rows):
    print()
    print("== goals (printed, not asserted)")
    if growth_rows:
        worst = [g for g in growth_rows if g["per_10x"] is not None]
        if worst:
            g = max(worst, key=lambda g: g["per_10x"])
            print("   1. time growth per 10x objects <= %g: worst %.2f (%s, %d -> %d)"
                  % (GOAL_GROWTH_PER_10X, g["per_10x"], g["what"], g["n1"], g["n2"]))
    cold = []
    for res in results:
        r = res["rows"][0] if res["rows"] else None
        if r and not r.get("timeout") and res.get("files"):
            cold.append("%s %.3f (%.3f with +after)"
                        % (run_name(res), r["requests_per_file"],
                           (r["requests"] + (r.get("requests_after") or 0)) / res["files"]))
    if cold:
        print("   2. cold walk requests per file <= %g: %s" % (GOAL_REQ_PER_FILE, ", ".join(cold)))
    for res in results:
        if res["kind"] == "instance" and res["rows"]:
            print("   3. dssfs peak RSS, whole-instance walk < %g MiB (at %s files): "
                  "%s MiB at %s files"
                  % (GOAL_RSS_MIB, "{:,}".format(GOAL_RSS_FILES),
                     fmt_opt(res["rows"][0].get("peak_rss_mib"), "%.1f"),
                     "{:,}".format(res["files"] or 0)))
    ratios = ["%s %.3f" % (run_name(res), tar_over_curl(res)) for res in results
              if tar_over_curl(res) is not None]
    if ratios:
        print("   4. cold tar / curl --parallel <= %.2f: %s" % (GOAL_TAR_OVER_CURL,
                                                              ", ".join(ratios)))


def run_name(res):
    name = ("1x%d" % res["n"] if res["kind"] == "size"
            else "%dx%d" % (res["projects"], res["datasets"]))
    return "%s@%gms" % (name, res["latency_ms"])


# --- machine --------------------------------------------------------------------------------

def machine(args):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return ""
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal:")), "0")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    dirty = out(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"nproc": out(["nproc"]), "cpu": cpu, "mem_mib": int(mem) // 1024,
            "kernel": platform.release(),
            "commit": out(["git", "log", "-1", "--format=%h %<(60,trunc)%s"]).rstrip()
                      + (" (+ local changes)" if dirty else ""),
            "dssfs": os.path.abspath(args.dssfs), "python": sys.version.split()[0],
            "tar": out(["tar", "--version"]).splitlines()[0] if out(["tar", "--version"]) else "",
            "curl": out(["curl", "--version"]).split("\n")[0],
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


def print_machine(m):
    print("machine: %s CPUs (%s), %s MiB, kernel %s, python %s"
          % (m["nproc"], m["cpu"], "{:,}".format(m["mem_mib"]), m["kernel"], m["python"]))
    print("dssfs: %s, commit %s" % (m["dssfs"], m["commit"]))
    print("%s; %s" % (m["tar"], m["curl"]))
    print("load average at start: %s" % " ".join(m["loadavg_start"]))
    print(LEGEND.rstrip())
    sys.stdout.flush()


# --- main -------------------------------------------------------------------------------------

def parse_pxd(text):
    p, _, d = text.lower().partition("x")
    return int(p), int(d)


def parse_ratio(text):
    shape, _, lat = text.partition("@")
    p, d = parse_pxd(shape)
    return p, d, float(lat)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--sizes", help="N,N,...: one project of N datasets each (default %s)"
                    % DEFAULT_SIZES)
    ap.add_argument("--instance", help="PxD: whole-instance cold tar (default %s)"
                    % DEFAULT_INSTANCE)
    ap.add_argument("--ratios", nargs="?", const=DEFAULT_RATIOS, metavar="PxD@MS,...",
                    help="cold tar / curl --parallel runs (default %s)" % DEFAULT_RATIOS)
    ap.add_argument("--latency-ms", type=float, default=0,
                    help="latency of the sizes and instance runs (default 0)")
    ap.add_argument("--dssfs", default=os.path.join(ROOT, "build", "dssfs"))
    ap.add_argument("--opts", help="dssfs -o options (default: none, dssfs's defaults)")
    ap.add_argument("--prefetch", type=int, default=16,
                    help="curl --parallel-max when --opts sets no prefetch= "
                         "(dssfs's default prefetch, 16)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds a command may take before it is killed (default 900)")
    ap.add_argument("--no-curl", dest="curl", action="store_false",
                    help="no curl --parallel baseline in the sizes and instance runs")
    ap.add_argument("--tar-read", action="store_true",
                    help="tar c to a pipe (files are read) instead of to /dev/null "
                         "(GNU tar then only stats them)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    # Also when started in the background (SIGINT ignored) or sent SIGTERM: stop
    # through the finally clauses, which unmount and end the processes started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("scale_bench: terminated"))
    if args.sizes is None and args.instance is None and args.ratios is None:
        args.sizes, args.instance, args.ratios = DEFAULT_SIZES, DEFAULT_INSTANCE, DEFAULT_RATIOS
    sizes = [int(s) for s in (args.sizes or "").split(",") if s.strip()]
    instance = parse_pxd(args.instance) if args.instance and args.instance != "none" else None
    ratios = [parse_ratio(r) for r in (args.ratios or "").split(",") if r.strip()]
    if not os.access(args.dssfs, os.X_OK):
        sys.exit("no dssfs at %s (build it, or give --dssfs)" % args.dssfs)

    m = machine(args)
    print_machine(m)
    t_start = time.monotonic()
    results = []
    size_results = []
    for n in sizes:
        res = size_run(args, n)
        size_results.append(res)
        results.append(res)
        print_run(res, args)
    growth_rows = growth(size_results)
    if growth_rows:
        print_growth(growth_rows)
    if instance:
        res = instance_run(args, *instance)
        results.append(res)
        print_run(res, args)
    for p, d, lat in ratios:
        res = ratio_run(args, p, d, lat)
        results.append(res)
        print_run(res, args)
    print_goals(results, growth_rows)
    m["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    m["total_seconds"] = time.monotonic() - t_start
    print()
    print("total %.0f s; load average at the end: %s" % (m["total_seconds"],
                                                         " ".join(m["loadavg_end"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": m, "options": vars(args), "runs": results,
                       "growth": growth_rows}, f, indent=2)


if __name__ == "__main__":
    main()
