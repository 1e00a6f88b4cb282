#!/bin/sh
# The whole test suite, as CI runs it: installs the dependencies, builds
# dssfs twice (plain with -Werror, and with ASan+UBSan), and runs the unit
# tests (CTest) and the mount tests (pytest, through a real FUSE mount
# against the DSS emulator) on both builds; builds, installs and removes the
# Debian package (packaging/ci-package.sh); then a ThreadSanitizer build
# under the concurrency-heavy mount tests.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)

./packaging/install-deps.sh

# Debian's interpreter has pytest; another python3 may come first on PATH.
PY=/usr/bin/python3
JOBS=$(nproc 2>/dev/null || echo 2)

build() { # dir, extra cmake args
	dir=$1
	shift
	cmake -S . -B "$dir" -DDSSFS_WERROR=ON "$@" >/dev/null
	cmake --build "$dir" -j "$JOBS"
}

run_suite() { # build dir, label
	echo "== $2: unit tests"
	(cd "$1" && ctest --output-on-failure)
	echo "== $2: emulator and mount tests"
	DSSFS_BIN="$ROOT/$1/dssfs" "$PY" -m pytest -q -rs -p no:cacheprovider tests/emulator tests/integration
}

build build
run_suite build "plain build"

# The Debian package: built, checked by lintian, installed, its mount tests run
# against /usr/bin/dssfs, removed (about a minute and a half).
echo "== Debian package"
./packaging/ci-package.sh

# halt_on_error: any sanitizer report fails the test that caused it.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
build build-asan -DDSSFS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
# (the big-file test's bytes, not its bound, are what ASan checks)
export DSSFS_BIG_FILE_MIB=256
run_suite build-asan "ASan+UBSan build"
unset DSSFS_BIG_FILE_MIB

# ThreadSanitizer: the daemon under the concurrency-heavy mount tests (walks,
# parallel readers and writers, saves, SIGHUP).
unset ASAN_OPTIONS UBSAN_OPTIONS
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
build build-tsan -DDSSFS_TSAN=ON -DCMAKE_BUILD_TYPE=Debug
echo "== ThreadSanitizer build: concurrency mount tests"
DSSFS_BIG_FILE_MIB=256 DSSFS_BIN="$ROOT/build-tsan/dssfs" "$PY" -m pytest -q -rs -p no:cacheprovider \
	tests/integration/test_trust.py tests/integration/test_walk.py \
	tests/integration/test_cache.py tests/integration/test_write.py \
	tests/integration/test_shutdown.py tests/integration/test_types.py \
	tests/integration/test_files.py tests/integration/test_stats.py \
	tests/integration/test_systemd.py tests/integration/test_instances.py \
	tests/integration/test_project_folders.py
unset TSAN_OPTIONS

# libFuzzer targets (clang), a bounded run of each: FUZZ_SECONDS, default 60.
echo "== fuzzing"
tests/fuzz/run.sh

echo "== all tests passed"
