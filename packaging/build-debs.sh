#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the Debian packages of gst-backbone (packaging/README.md):
#
#   packaging/build-debs.sh [BUILD_DIR]      (default build-deb; .deb files in BUILD_DIR/packages/)
#
# Configures BUILD_DIR for /usr (the prefix of Debian packages) on first use, without tests, then
# builds and runs CPack (the `package` target). Needs what ./setup.sh installs (build tools,
# LibTorch, OpenCV, yaml-cpp, GStreamer dev packages, dpkg-dev, file).
# Environment: JOBS (default: number of cores), CMAKE_ARGS (extra arguments for the first
# configure, e.g. -DBACKBONE_WITH_CUDA=OFF for no libbackbone-cuda0).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-deb}
jobs=${JOBS:-$(nproc)}
if [ ! -f "$build/CMakeCache.txt" ]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    -DBACKBONE_BUILD_TESTS=OFF ${CMAKE_ARGS:-}
fi
cmake --build "$build" -j "$jobs" --target package
echo "build-debs.sh: packages in $build/packages/:"
ls -1 "$build"/packages/*.deb
