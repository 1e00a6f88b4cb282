#!/bin/sh
# Try dssfs without a DSS: installs the dependencies, builds dssfs, starts
# the DSS emulator with the demo instance (tests/emulator/demo) on a free
# loopback port, and mounts it.
#
#   tests/demo.sh          start and mount (at $DSSFS_DEMO_DIR, default ~/dss-demo)
#   tests/demo.sh stop     unmount and stop the emulator
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MNT=${DSSFS_DEMO_DIR:-$HOME/dss-demo}
STATE=${XDG_RUNTIME_DIR:-/tmp}/dssfs-demo-$(id -u)

stop() {
	[ -f "$STATE/mountpoint" ] && MNT=$(cat "$STATE/mountpoint")
	if grep -qs " $MNT fuse" /proc/mounts; then
		fusermount3 -u "$MNT" && echo "unmounted $MNT"
	fi
	if [ -f "$STATE/emulator.pid" ]; then
		kill "$(cat "$STATE/emulator.pid")" 2>/dev/null && echo "stopped the emulator"
		rm -f "$STATE/emulator.pid"
	fi
	rm -f "$STATE/mountpoint"
}

# wait_for NAME CONDITION MESSAGE: polls CONDITION for 10 s while the process
# in $STATE/NAME.pid lives; otherwise prints MESSAGE and $STATE/NAME.log.
wait_for() {
	i=0
	until sh -c "$2"; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; then
			echo "dssfs demo: $3:" >&2
			cat "$STATE/$1.log" >&2
			exit 1
		fi
		sleep 0.1
	done
}

if [ "${1:-}" = stop ]; then
	stop
	exit 0
fi

./packaging/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

if grep -qs " $MNT fuse" /proc/mounts; then
	echo "dssfs demo: already mounted at $MNT (stop it with: $ROOT/tests/demo.sh stop)"
	exit 0
fi
stop >/dev/null 2>&1 || true
mkdir -p "$STATE" "$MNT"
chmod 700 "$STATE"

# A fresh random key for this demo, shared through a file, never argv.
umask 077
head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$STATE/key"
rm -f "$STATE/port"
setsid /usr/bin/python3 tests/emulator/dss_emulator.py --port 0 --port-file "$STATE/port" \
	--fixture tests/emulator/demo --api-key-file "$STATE/key" \
	>"$STATE/emulator.log" 2>&1 </dev/null &
echo $! >"$STATE/emulator.pid"
wait_for emulator "test -s $STATE/port" "the emulator did not start"
PORT=$(cat "$STATE/port")

# In the foreground of a background job: its log is a file, also where
# there is no syslog.
DKU_DSS_URL="http://127.0.0.1:$PORT" DKU_API_KEY="$(cat "$STATE/key")" \
	setsid ./build/dssfs -f "$MNT" >"$STATE/dssfs.log" 2>&1 </dev/null &
echo $! >"$STATE/dssfs.pid"
wait_for dssfs "grep -qs ' $MNT fuse' /proc/mounts" "dssfs did not mount"
echo "$MNT" >"$STATE/mountpoint"

cat <<MSG

dssfs demo: the demo DSS instance (emulator on 127.0.0.1:$PORT) is mounted at
    $MNT
Try:
    ls $MNT
    ls -l $MNT/SALES/datasets/*/
    jq .columns $MNT/SALES/datasets/*/schema.json
    grep -r connection $MNT/*/datasets/*/settings.json
Logs: $STATE/dssfs.log (dssfs), $STATE/emulator.log (the emulator)
To unmount and stop the emulator:
    $ROOT/tests/demo.sh stop
(or by hand: fusermount3 -u $MNT; kill $(cat "$STATE/emulator.pid"))
MSG
