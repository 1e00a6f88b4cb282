#!/usr/bin/python3
"""Records a seed input for fuzz_tree: the DSS emulator's answers to the requests
fuzz_tree sends, in the order it sends them.

    tests/fuzz/record_seed.py build-fuzz/fuzz_tree OUT [emulator arguments...]

fuzz_tree is run again and again with DSSFS_FUZZ_TRACE set; each run shows the next
request that has no answer yet, whose answer is fetched from the emulator and
appended, until every request is answered.  An error status becomes an error body
("!" and the index of its errno in fuzz_tree.c); a stream (the project export) is
replaced by a short stand-in, as its bytes are opaque to dssfs.  The first byte of
the seed is fuzz_tree's flags byte (0: read-write mount, a cache that keeps all).
"""

import base64
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "..", "emulator", "dss_emulator.py")
SEP = b"\n--\n"
ERRNO_INDEX = {404: 0, 403: 1, 401: 1}  # ENOENT, EACCES; anything else EIO (2)
KEY = "record-seed-key"


def main():
    fuzz_tree, out, emu_args = sys.argv[1], sys.argv[2], sys.argv[3:]
    # the first --user KEY:LOGIN:RULES is the key that records, else an admin key
    users = [emu_args[i + 1] for i, a in enumerate(emu_args[:-1]) if a == "--user"]
    key = users[0].split(":")[0] if users else KEY
    emu_args = ["--api-key", KEY] + emu_args
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        emu = subprocess.Popen([sys.executable, EMULATOR, "--port", "0", "--port-file",
                                port_file] + emu_args)
        try:
            for _ in range(100):
                if os.path.exists(port_file):
                    break
                time.sleep(0.1)
            port = int(open(port_file).read())
            record(fuzz_tree, out, port, key, os.path.join(tmp, "seed"))
        finally:
            emu.terminate()
            emu.wait(timeout=10)


def answer(port, key, method, path):
    req = urllib.request.Request("http://127.0.0.1:%d/public/api/%s" % (port, path),
                                 method=method, data=b"{}" if method == "POST" else None,
                                 headers={"Authorization": "Basic " +
                                          base64.b64encode(key.encode() + b":").decode()})
    try:
        body = urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError as e:
        return b"!" + bytes([ERRNO_INDEX.get(e.code, 2)])
    if method == "POST":
        return b"PK\x03\x04 a stand-in for the export"
    assert SEP not in body, path
    return body


def record(fuzz_tree, out, port, key, scratch):
    bodies = []
    while True:
        with open(scratch, "wb") as f:
            f.write(b"\x00" + SEP.join(bodies))
        r = subprocess.run([fuzz_tree, "-runs=1", scratch], capture_output=True,
                           env=dict(os.environ, DSSFS_FUZZ_TRACE="1"), timeout=60)
        if r.returncode != 0:
            sys.exit(r.stderr.decode(errors="replace"))
        asked = re.findall(rb"^body (\d+): (GET|POST) (\S+)$", r.stderr, re.M)
        todo = [(m.decode(), p.decode()) for n, m, p in asked if int(n) == len(bodies)]
        if not todo:
            break
        bodies.append(answer(port, key, *todo[0]))
    with open(out, "wb") as f:
        f.write(b"\x00" + SEP.join(bodies))
    print("%s: %d bodies, %d bytes" % (out, len(bodies), os.path.getsize(out)))


if __name__ == "__main__":
    main()
