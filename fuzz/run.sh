#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer targets (clang++, ASan + UBSan, no engines) in build-fuzz/ and runs each
# for SECONDS on a corpus seeded from tests/data (kept in build-fuzz/corpus/<target> between runs).
# A crash, sanitizer report, leak, timeout (30 s) or out-of-memory (2 GB) of any target is a
# failure: the reproducer is left in build-fuzz/findings/<target>/ and the script exits 1.
#   fuzz/run.sh SECONDS [TARGET...]     (default: every target)
#   JOBS=2 runs that many targets at a time (default 1).
set -eu
SECONDS_PER_TARGET=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-fuzz}
TARGETS=${*:-fuzz_pickle fuzz_torch fuzz_safetensors fuzz_npy fuzz_config_yaml fuzz_literal}
JOBS=${JOBS:-1}

if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DBACKBONE_FUZZ=ON \
    -DBACKBONE_WITH_LIBTORCH=OFF -DBACKBONE_WITH_ONEDNN=OFF -DBACKBONE_WITH_OPENCV_DNN=OFF \
    -DBACKBONE_WITH_CUDA=OFF -DBACKBONE_BUILD_GST=OFF -DBACKBONE_BUILD_TOOLS=OFF \
    -DBACKBONE_BUILD_TESTS=OFF -DBACKBONE_INSTALL=OFF \
    ${CMAKE_LAUNCHER:+-DCMAKE_CXX_COMPILER_LAUNCHER=$CMAKE_LAUNCHER -DCMAKE_C_COMPILER_LAUNCHER=$CMAKE_LAUNCHER}
fi
# shellcheck disable=SC2086
ninja -C "$BUILD" $TARGETS

seeds() {
  case $1 in
    fuzz_pickle) find "$ROOT/tests/data/checkpoints" -name '*.pkl' ;;
    fuzz_torch) find "$ROOT/tests/data/checkpoints" -name '*.pth' -o -name '*.pt' ;;
    fuzz_safetensors) find "$ROOT/tests/data" -name '*.safetensors' -size -256k ;;
    fuzz_npy) find "$ROOT/tests/data" -name '*.npy' -size -64k | head -40 ;;
    fuzz_config_yaml) find "$ROOT/tests/data/config" "$ROOT/configs" -name '*.yaml' ;;
    fuzz_literal) printf '\000[\047res4\047, \047res5\047]' >"$2/seed_list"
                  printf '\001[103.53, 116.28, 123.675]' >"$2/seed_floats"
                  printf '\002(50,)' >"$2/seed_tuple" ;;
  esac
}

run_one() {
  t=$1
  corpus="$BUILD/corpus/$t"
  findings="$BUILD/findings/$t"
  mkdir -p "$corpus" "$findings"
  for f in $(seeds "$t" "$corpus"); do cp "$f" "$corpus/" 2>/dev/null || true; done
  log="$BUILD/findings/$t.log"
  if "$BUILD/bin/$t" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=2048 \
      -max_len=262144 -print_final_stats=1 -artifact_prefix="$findings/" >"$log" 2>&1; then
    echo "$t: ok ($(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs," \
      "$(ls "$corpus" | wc -l) corpus files, $(grep -oE 'cov: [0-9]+' "$log" | tail -1))"
  else
    echo "$t: FAILED, see $log and $findings/; its end:" >&2
    tail -n 60 "$log" | sed "s/^/$t: /" >&2
    return 1
  fi
}

status=0
running=0
pids=""
for t in $TARGETS; do
  run_one "$t" &
  pids="$pids $!"
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    for p in $pids; do wait "$p" || status=1; done
    pids=""
    running=0
  fi
done
for p in $pids; do wait "$p" || status=1; done
exit $status
