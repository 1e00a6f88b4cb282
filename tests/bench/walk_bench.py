#!/usr/bin/python3
"""Benchmark of whole-tree walks through dssfs (README, "Benchmark").

Starts the DSS emulator with a generated instance (--generate P,D) and a
latency per request, mounts dssfs, and measures, each with wall time, the HTTP
requests the emulator answered, requests per file and dssfs's peak RSS:

  cold tar   tar c of the whole mount, just after mounting
  warm tar   the same again, within the cache TTL
  ls -lR, find, rsync -a (first copy), rsync -a again (must transfer nothing)

Then two baselines over exactly the URLs the cold walk fetched: curl one after
another on one keep-alive connection, and curl --parallel at the same
concurrency as dssfs's prefetch.  It prints the figures and the ratios of the
cold tar to each baseline.  Nothing is asserted: these are measurements.

  tests/bench/walk_bench.py [--projects 20] [--datasets 50] [--latency-ms 10]
                            [--dssfs build/dssfs] [--prefetch 16] [--json out.json]
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMULATOR = os.path.join(ROOT, "tests", "emulator", "dss_emulator.py")
KEY = "bench-key"


def run_cmd(cmd, timeout=None, capture=False):
    """Runs cmd (a list, or a string for sh -c) in a new process group; returns
    (exit status, stdout bytes, stderr bytes, timed out).  On timeout the group,
    which this call started, is killed."""
    p = subprocess.Popen(cmd, shell=isinstance(cmd, str), start_new_session=True,
                         stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out or b"", err or b"", False
    except BaseException as e:
        os.killpg(p.pid, signal.SIGKILL)
        if not isinstance(e, subprocess.TimeoutExpired):
            p.wait()
            raise
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        return None, out or b"", err or b"", True


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(proc):
    """User + system CPU seconds of a running process (nan if it is gone)."""
    try:
        with open("/proc/%d/stat" % proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, AttributeError, IndexError, ValueError):
        return float("nan")


class Run:
    """One emulator (--generate P,D at a latency) and one dssfs mount of it.

    walk_bench.py and scale_bench.py both use it.  Every process it starts is
    ended by PID in stop(); commands run in their own process group, so that a
    timeout (timeout=None: none) kills the whole group."""

    def __init__(self, dssfs, projects, datasets, latency_ms, mount_opts=(), timeout=None):
        self.dssfs_path = dssfs
        self.projects, self.datasets = projects, datasets
        self.latency_ms = latency_ms
        self.mount_opts = list(mount_opts)
        self.timeout = timeout
        self.tmp = tempfile.mkdtemp(prefix="dssfs-bench-")
        self.emu = self.dssfs = None
        self.mnt = os.path.join(self.tmp, "mnt")
        self.dssfs_err = os.path.join(self.tmp, "dssfs.err")
        os.mkdir(self.mnt)

    # --- processes ----------------------------------------------------------------------

    def start_emulator(self):
        port_file = os.path.join(self.tmp, "port")
        self.log = os.path.join(self.tmp, "requests.log")
        keyfile = os.path.join(self.tmp, "key")
        with open(keyfile, "w") as f:
            f.write(KEY + "\n")
        self.emu = subprocess.Popen(
            ["/usr/bin/python3", EMULATOR, "--port", "0", "--port-file", port_file,
             "--generate", "%d,%d" % (self.projects, self.datasets),
             "--latency-ms", str(self.latency_ms), "--api-key-file", keyfile,
             "--log-requests", self.log],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "emu.err"), "w"))
        t0 = time.monotonic()
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if self.emu.poll() is not None:
                sys.exit("the emulator did not start: " +
                         open(os.path.join(self.tmp, "emu.err")).read())
            if time.monotonic() - t0 > 600:
                sys.exit("the emulator did not start in 600 s")
            time.sleep(0.05)
        self.emulator_start_s = time.monotonic() - t0
        self.port = int(open(port_file).read())
        self.url = "http://127.0.0.1:%d" % self.port

    def control(self, what, method="GET"):
        req = urllib.request.Request(self.url + "/__emulator__/" + what, method=method,
                                     data=b"" if method == "POST" else None)
        return json.loads(urllib.request.urlopen(req).read() or b"null")

    def requests(self):
        return self.control("stats")["requests"]

    def mount(self):
        env = dict(os.environ, DKU_DSS_URL=self.url, DKU_API_KEY=KEY)
        self.dssfs = subprocess.Popen([self.dssfs_path, "-f"] + self.mount_opts + [self.mnt],
                                      env=env, stderr=open(self.dssfs_err, "a"))
        for _ in range(600):
            if any(l.split()[1] == self.mnt for l in open("/proc/mounts")):
                return
            if self.dssfs.poll() is not None:
                sys.exit("dssfs did not mount: " + open(self.dssfs_err).read())
            time.sleep(0.05)
        sys.exit("dssfs did not mount in time")

    def unmount(self):
        """fusermount3 -u (lazily if busy), then the dssfs process, by its PID."""
        if not self.dssfs:
            return
        if subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL).returncode:
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], stderr=subprocess.DEVNULL)
        try:
            self.dssfs.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.dssfs.kill()
            self.dssfs.wait()
        self.dssfs = None

    def remount(self):
        self.unmount()
        self.mount()

    def count_files(self):
        """Regular files under the mount (find -type f); the walk fills dssfs's
        cache, so remount() before a cold measurement.  None on timeout."""
        rc, out, _, timed_out = run_cmd("find %s -type f | wc -l" % self.mnt, self.timeout,
                                        capture=True)
        return None if timed_out else int(out)

    def peak_rss_mib(self, proc=None):
        proc = proc or self.dssfs
        try:
            with open("/proc/%d/status" % proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def stop(self):
        try:
            self.unmount()
        finally:
            if self.emu:
                self.emu.kill()
                self.emu.wait()
                self.emu = None
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- measurements -------------------------------------------------------------------

    def timed(self, label, cmd, nfiles, check=True):
        """Runs cmd (a list, or a shell pipeline as a string) and measures it: wall
        seconds, requests the emulator answered, requests per file, dssfs's peak RSS
        so far, and the CPU seconds dssfs and the emulator used meanwhile.  With
        check, a failing command raises; otherwise its exit status is in "rc".  A
        command that outlives the timeout is killed and marked "timeout"."""
        self.control("reset-stats", "POST")
        log_start = os.path.getsize(self.log)
        cpu0 = cpu_seconds(self.dssfs), cpu_seconds(self.emu)
        t0 = time.monotonic()
        rc, out, err, timed_out = run_cmd(cmd, self.timeout, capture=True)
        dt = time.monotonic() - t0
        if check and not timed_out and rc:
            raise subprocess.CalledProcessError(rc, cmd, out, err)
        n = self.requests()
        row = {"what": label, "seconds": dt, "requests": n,
               "requests_per_file": n / nfiles if nfiles else 0.0,
               "peak_rss_mib": self.peak_rss_mib(), "rc": rc, "timeout": timed_out,
               "dssfs_cpu_s": cpu_seconds(self.dssfs) - cpu0[0],
               "emulator_cpu_s": cpu_seconds(self.emu) - cpu0[1],
               "stderr": err.decode(errors="replace")[-500:]}
        return row, out.decode(errors="replace"), log_start

    def urls_since(self, offset):
        with open(self.log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode().splitlines()
        return [self.url + l.split(" ", 1)[1] for l in lines if l.startswith("GET ")]

    def curl_baseline(self, urls, parallel):
        cfg = os.path.join(self.tmp, "curl.cfg")
        with open(cfg, "w") as f:
            f.write('user = "%s:"\n' % KEY)
            for u in urls:
                f.write('url = "%s"\noutput = "/dev/null"\n' % u)
        cmd = ["curl", "-s", "-f", "--no-progress-meter", "--config", cfg]
        if parallel:
            cmd += ["--parallel", "--parallel-immediate", "--parallel-max", str(parallel)]
        self.control("reset-stats", "POST")
        t0 = time.monotonic()
        rc, _, _, timed_out = run_cmd(cmd, self.timeout)
        if rc and not timed_out:
            raise subprocess.CalledProcessError(rc, cmd)
        return (None if timed_out else time.monotonic() - t0), self.requests()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--latency-ms", type=int, default=10)
    ap.add_argument("--dssfs", default=os.path.join(ROOT, "build", "dssfs"))
    ap.add_argument("--prefetch", type=int, default=16,
                    help="dssfs -o prefetch=N, and the parallel baseline's concurrency")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    run = Run(args.dssfs, args.projects, args.datasets, args.latency_ms,
              ["-o", "prefetch=%d" % args.prefetch] if args.prefetch >= 0 else [])
    rows = []
    try:
        run.start_emulator()
        run.mount()
        nfiles = run.count_files()
        # find itself walked the tree: remount for a cold start.
        run.remount()

        cold, _, cold_log = run.timed("cold tar c", ["tar", "cf", "/dev/null", "-C", run.mnt, "."],
                                      nfiles)
        rows.append(cold)
        cold_urls = run.urls_since(cold_log)
        rows.append(run.timed("warm tar c", ["tar", "cf", "/dev/null", "-C", run.mnt, "."],
                              nfiles)[0])
        rows.append(run.timed("ls -lR", ["ls", "-lR", run.mnt], nfiles)[0])
        rows.append(run.timed("find", ["find", run.mnt], nfiles)[0])
        dest = os.path.join(run.tmp, "copy")
        rows.append(run.timed("rsync -a (first)",
                              ["rsync", "-a", "--stats", run.mnt + "/", dest], nfiles)[0])
        second, out, _ = run.timed("rsync -a (second)",
                                   ["rsync", "-a", "--stats", run.mnt + "/", dest], nfiles)
        m = re.search(r"Number of regular files transferred: ([\d,]+)", out)
        second["files_transferred"] = int(m.group(1).replace(",", "")) if m else None
        rows.append(second)

        serial_s, serial_n = run.curl_baseline(cold_urls, 0)
        par_s, par_n = run.curl_baseline(cold_urls, args.prefetch)
    finally:
        run.stop()

    print("instance: %d projects x %d datasets, %d files, latency %d ms, prefetch %d"
          % (args.projects, args.datasets, nfiles, args.latency_ms, args.prefetch))
    print("%-20s %9s %9s %10s %10s" % ("walk", "seconds", "requests", "req/file", "peak RSS"))
    for r in rows:
        extra = ""
        if "files_transferred" in r:
            extra = "  (files transferred: %s)" % r["files_transferred"]
        print("%-20s %9.2f %9d %10.3f %7.1f MiB%s" % (r["what"], r["seconds"], r["requests"],
                                                     r["requests_per_file"], r["peak_rss_mib"],
                                                     extra))
    print("%-20s %9.2f %9d   (the %d URLs of the cold walk, one keep-alive connection)"
          % ("curl serial", serial_s, serial_n, len(cold_urls)))
    print("%-20s %9.2f %9d   (same URLs, --parallel-max %d)"
          % ("curl parallel", par_s, par_n, args.prefetch))
    print("cold tar / serial curl:   %.3f  (%.1fx faster)" % (cold["seconds"] / serial_s,
                                                            serial_s / cold["seconds"]))
    print("cold tar / parallel curl: %.3f" % (cold["seconds"] / par_s))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"instance": vars(args), "files": nfiles, "walks": rows,
                       "curl_serial": {"seconds": serial_s, "requests": serial_n},
                       "curl_parallel": {"seconds": par_s, "requests": par_n}}, f, indent=2)


if __name__ == "__main__":
    main()
