#!/bin/sh
# The Debian package, as CI checks it (tests/run-all.sh runs this; it also runs
# alone, as root): builds it with dpkg-buildpackage from a clean copy of the
# tree (packaging/debian as debian/), checks it with lintian (no error), installs
# it with dpkg -i, runs the package's mount tests against the installed
# /usr/bin/dssfs, shows `man dssfs`, and removes it with dpkg -r.
# Leaves the .deb, .changes and lintian's report in $DSSFS_PKG_OUT (default
# build-pkg/).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=/usr/bin/python3
OUT=${DSSFS_PKG_OUT:-$ROOT/build-pkg}
start=$(date +%s)

if dpkg-query -W -f='${Status}' dssfs 2>/dev/null | grep -q "install ok installed"; then
	echo "ci-package: a dssfs package is installed already; remove it first (dpkg -r dssfs)" >&2
	exit 1
fi

WORK=$(mktemp -d)
installed=0
cleanup() {
	if [ "$installed" = 1 ]; then
		dpkg -r dssfs >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== package: the tree (tracked and new files, no build directories)"
mkdir "$WORK/dssfs"
# (a file deleted but not yet committed is skipped: --ignore-failed-read)
git ls-files -z --cached --others --exclude-standard |
	tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$WORK/dssfs"
cp -r packaging/debian "$WORK/dssfs/debian"

echo "== package: dpkg-buildpackage -us -uc -b"
(cd "$WORK/dssfs" && DEB_BUILD_OPTIONS="parallel=$(nproc)" dpkg-buildpackage -us -uc -b) \
	>"$WORK/build.log" 2>&1 || { tail -50 "$WORK/build.log"; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/dssfs*.deb "$OUT"/dssfs*.changes "$OUT"/dssfs*.buildinfo
cp "$WORK"/*.deb "$WORK"/*.changes "$WORK"/*.buildinfo "$OUT"/
deb=$(ls "$OUT"/dssfs_*.deb)
echo "built $deb"

echo "== package: lintian"
# Errors fail the stage; warnings and the rest are shown.
LINTIAN_PROFILE= lintian --fail-on error --display-info "$OUT"/dssfs_*.changes >"$OUT/lintian.txt" 2>&1 ||
	{ cat "$OUT/lintian.txt"; echo "lintian found errors" >&2; exit 1; }
echo "lintian: $(grep -c '^E:' "$OUT/lintian.txt" || true) errors," \
	"$(grep -c '^W:' "$OUT/lintian.txt" || true) warnings," \
	"$(grep -c '^[IPN]:' "$OUT/lintian.txt" || true) other tags"
cat "$OUT/lintian.txt"

echo "== package: dpkg -i"
dpkg -i "$deb" >/dev/null
installed=1
test -x /usr/bin/dssfs
echo "installed: $(/usr/bin/dssfs --version | head -1)"
MANPAGER=cat MANWIDTH=80 man dssfs | head -3

echo "== package: systemd-analyze verify dssfs@prod.service"
systemd-analyze verify dssfs@prod.service
systemd-analyze security --offline=yes dssfs@prod.service 2>/dev/null | tail -1 || true

echo "== package: mount tests against /usr/bin/dssfs"
DSSFS_BIN=/usr/bin/dssfs "$PY" -m pytest -q -rs -p no:cacheprovider \
	tests/integration/test_package.py tests/integration/test_systemd.py \
	tests/integration/test_logging.py

echo "== package: dpkg -r"
dpkg -r dssfs >/dev/null
installed=0
for f in /usr/bin/dssfs /usr/share/man/man1/dssfs.1.gz /usr/lib/systemd/system/dssfs@.service; do
	if [ -e "$f" ]; then
		echo "dpkg -r left $f" >&2
		exit 1
	fi
done
echo "removed: /usr/bin/dssfs and the man page are gone"
echo "== package: passed in $(($(date +%s) - start)) s"
