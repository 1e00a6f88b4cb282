#!/bin/sh
# Builds the libFuzzer targets (build-fuzz, with clang) and runs each one for a
# bounded time on a copy of its seed corpus (tests/fuzz/corpus/<target>), so the
# repository's corpus never grows here.  Fails if any target crashes, leaks,
# trips a sanitizer or an invariant, or runs an input too long.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   which targets (default: escape pathtab json scan tree tsvcsv)
#   FUZZ_BUILD     build directory (default build-fuzz)
#
# The inputs that failed are kept in $FUZZ_BUILD/fuzz-artifacts/; reproduce
# one with: $FUZZ_BUILD/fuzz_<target> <file>
set -eu
cd "$(dirname "$0")/../.."

SECS=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"escape pathtab json scan tree tsvcsv"}
BUILD=${FUZZ_BUILD:-build-fuzz}
JOBS=$(nproc 2>/dev/null || echo 2)

cmake -S . -B "$BUILD" -DDSSFS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DDSSFS_WERROR=ON \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
for t in $TARGETS; do
	cmake --build "$BUILD" -j "$JOBS" --target "fuzz_$t"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dssfs-fuzz.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

failed=""
for t in $TARGETS; do
	mkdir -p "$TMP/corpus"
	cp -R "tests/fuzz/corpus/$t" "$TMP/corpus/$t"
	mkdir -p "$TMP/artifacts/$t"
	dict=""
	[ -f "tests/fuzz/fuzz_$t.dict" ] && dict="-dict=tests/fuzz/fuzz_$t.dict"
	echo "== fuzz_$t: $SECS s"
	# shellcheck disable=SC2086
	if "$BUILD/fuzz_$t" -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$TMP/artifacts/$t/" $dict \
		"$TMP/corpus/$t" >"$TMP/$t.log" 2>&1 &&
		[ -z "$(ls -A "$TMP/artifacts/$t")" ]; then
		grep -E '^stat::number_of_executed_units|^Done' "$TMP/$t.log" || true
	else
		tail -n 60 "$TMP/$t.log"
		mkdir -p "$BUILD/fuzz-artifacts"
		cp "$TMP/artifacts/$t/"* "$BUILD/fuzz-artifacts/" 2>/dev/null || true
		echo "== fuzz_$t FAILED; inputs kept in $BUILD/fuzz-artifacts/"
		failed="$failed $t"
	fi
done
[ -z "$failed" ] || { echo "== fuzzing failed:$failed"; exit 1; }
echo "== fuzzing: no crash in $SECS s per target"
