#!/bin/sh
# Installs what dssfs needs to build, run and test on Debian 12, from
# Debian's own packages.  Skips apt-get when everything is already there.
set -eu

PKGS="build-essential cmake pkg-config libfuse3-dev fuse3 libcurl4-openssl-dev libcjson-dev
      python3 python3-pytest ca-certificates curl jq rsync tar vim-nox
      clang libclang-rt-14-dev llvm"
PKGS="$PKGS strace"  # tests/integration/test_system.py counts the daemon's threads with it
# The Debian package (packaging/ci-package.sh): debhelper and dpkg-dev build it,
# lintian checks it, pandoc makes the man page, libsystemd-dev gives sd_notify,
# systemd's systemd-analyze checks the unit, man-db shows the page.
PKGS="$PKGS debhelper dpkg-dev fakeroot lintian pandoc libsystemd-dev systemd man-db"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "install-deps: need root or sudo for:$missing" >&2; exit 1; }
	SUDO="sudo"
fi
echo "install-deps: installing$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
