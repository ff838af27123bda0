#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One-command set-up on a fresh Debian 12 machine (run as root). Idempotent and incremental:
# packages already installed are not fetched again, and the build in ./build is reused.
#
#   ./setup.sh demo   install, build, and run backbone-infer on its built-in default
#                     (an R-50 with out features res2..res5 on a 480x640 test pattern)
#   ./setup.sh test   install, build, and run the whole test suite (ctest)
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), CMAKE_ARGS (extra
# arguments for the first configure, e.g. -DBACKBONE_WITH_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
case "$mode" in
  demo|test) ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

packages=(build-essential cmake ninja-build pkg-config
          libtorch-dev libyaml-cpp-dev nlohmann-json3-dev libgtest-dev libgmock-dev
          libopencv-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
if [ ! -f "$build/build.ninja" ]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
fi
cmake --build "$build" -j "$jobs"

if [ "$mode" = demo ]; then
  "$build/bin/backbone-infer" --output-dir "$build/demo-out"
else
  ctest --test-dir "$build" --output-on-failure -j "$jobs"
fi
