#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The library's unit and loader tests under AddressSanitizer + UndefinedBehaviorSanitizer: a
# separate build in build-asan/ (BUILD_DIR to change it) with BACKBONE_SANITIZE=ON, the oneDNN and
# OpenCV DNN engines, no LibTorch, CUDA, GStreamer or tools. Any sanitizer report (memory error,
# undefined behaviour, leak) aborts the test that made it, so the script exits non-zero.
#   tests/sanitize.sh [ctest arguments...]      e.g. tests/sanitize.sh -R Hostile
# Environment: BUILD_DIR (default build-asan), JOBS (default: number of cores), CMAKE_ARGS (extra
# arguments for the first configure, e.g. -DCMAKE_CXX_COMPILER_LAUNCHER=ccache).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-asan}
jobs=${JOBS:-$(nproc)}
if [ ! -f "$build/build.ninja" ]; then
  # RelWithDebInfo: -O2 keeps the golden and engine tests quick; -g names the lines in reports.
  # shellcheck disable=SC2086
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBACKBONE_SANITIZE=ON \
    -DBACKBONE_WITH_LIBTORCH=OFF -DBACKBONE_WITH_CUDA=OFF -DBACKBONE_BUILD_GST=OFF \
    -DBACKBONE_BUILD_TOOLS=OFF -DBACKBONE_INSTALL=OFF -DBACKBONE_BUILD_TESTS=ON ${CMAKE_ARGS:-}
fi
cmake --build "$build" -j "$jobs"

# halt_on_error: the first report ends the process (UBSan's are fatal through the build's
# -fno-sanitize-recover); detect_leaks: LeakSanitizer at exit; the tests' own exit code otherwise.
export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:detect_invalid_pointer_pairs=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
BACKBONE_CACHE_DIR="${BACKBONE_CACHE_DIR-$(cd "$build" && pwd)/tuning-cache}" \
  ctest --test-dir "$build" --output-on-failure -j "$jobs" -L cpu "$@"
