#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One-command set-up on a fresh Debian 12 machine (run as root). Idempotent and incremental:
# packages already installed are not fetched again, and the build in ./build is reused.
#
#   ./setup.sh demo   install, build, and run the main job on its built-in default: a
#                     gst-launch-1.0 pipeline (videotestsrc ! resnetbackbone ! featureoverlay /
#                     featuresink) with a built-in R-50 (out features res2..res5), leaving
#                     features (safetensors + index.json) and heatmap PNGs in build/demo/
#   ./setup.sh test   install, build, and run the whole test suite (ctest)
#   ./setup.sh sanitize [CTEST ARGS]   install, then build the library and its CPU tests with
#                     AddressSanitizer and UndefinedBehaviorSanitizer in build-asan/ and run them
#                     (tests/sanitize.sh; e.g. -R Hostile to run some)
#   ./setup.sh fuzz [TARGET...]   install (with clang), then build the libFuzzer targets in
#                     build-fuzz/ and run each for FUZZ_SECONDS (default 60), FUZZ_JOBS (default 2)
#                     at a time (fuzz/run.sh)
#
# Environment: BUILD_DIR (default build; sanitize and fuzz use BUILD_DIR-asan and BUILD_DIR-fuzz),
# JOBS (default: number of cores), CMAKE_ARGS (extra arguments for the first configure, e.g.
# -DBACKBONE_WITH_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
case "$mode" in
  demo|test|sanitize|fuzz) ;;
  *) echo "usage: $0 demo|test|sanitize|fuzz" >&2; exit 2 ;;
esac

# python3-torch/-torchvision: backbone-bench's PyTorch peer, which its end-to-end test runs.
# gobject-introspection, libgirepository1.0-dev, gir1.2-gstreamer-1.0: the meta library's
# GstFeatureMeta-1.0 .gir/.typelib; python3-gi, python3-gst-1.0, python3-numpy: the Python module
# gstfeaturemeta and its tests; gstreamer1.0-python3-plugin-loader: GStreamer elements written in
# Python (examples/plugins/python/featurestats.py).
# time: /usr/bin/time, the peak RSS of the pipeline-shape tests.
# gstreamer1.0-plugins-bad: x265enc (and h264parse) for the pipeline-shape tests.
packages=(build-essential cmake ninja-build pkg-config dpkg-dev file
          libtorch-dev libdnnl-dev libyaml-cpp-dev nlohmann-json3-dev libgtest-dev libgmock-dev
          libopencv-dev python3-torch python3-torchvision
          libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev gstreamer1.0-tools
          gstreamer1.0-plugins-base gstreamer1.0-plugins-good
          libboost-program-options-dev gstreamer1.0-plugins-ugly gstreamer1.0-libav
          gobject-introspection libgirepository1.0-dev gir1.2-gstreamer-1.0
          python3-gi python3-gst-1.0 python3-numpy gstreamer1.0-python3-plugin-loader
          time gstreamer1.0-plugins-bad)
# libFuzzer comes with clang's runtime libraries.
if [ "$mode" = fuzz ]; then
  packages+=(clang libclang-rt-14-dev)
fi
# PyTorch 2.x (Debian 13's python3-torch) exports ONNX, for backbone-bench's ONNX peers, through
# the onnx module; Debian 12's PyTorch 1.13 does not need it.
if (. /etc/os-release && [ "${VERSION_ID%%.*}" -ge 13 ]) 2>/dev/null; then
  packages+=(python3-onnx)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

build=${BUILD_DIR:-build}
if [ "$mode" = sanitize ]; then
  BUILD_DIR="$build-asan" exec tests/sanitize.sh "${@:2}"
fi
if [ "$mode" = fuzz ]; then
  fuzz_build="$build-fuzz"
  [[ "$fuzz_build" = /* ]] || fuzz_build="$PWD/$fuzz_build"
  BUILD="$fuzz_build" JOBS=${FUZZ_JOBS:-2} exec fuzz/run.sh "${FUZZ_SECONDS:-60}" "${@:2}"
fi
jobs=${JOBS:-$(nproc)}
if [ ! -f "$build/build.ninja" ]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
fi
cmake --build "$build" -j "$jobs"

if [ "$mode" = demo ]; then
  out="$build/demo"
  rm -rf "$out" && mkdir -p "$out"
  # Ten frames of a moving test pattern through the built-in R-50 (seeded weights: pass
  # config-file=... weights=... for a trained model); one branch writes the features, the other
  # draws res4's activation energy over the video into PNG files.
  GST_PLUGIN_PATH="$PWD/$build/lib/gstreamer-1.0${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}" \
  gst-launch-1.0 -e videotestsrc num-buffers=10 pattern=ball ! video/x-raw,width=640,height=480,framerate=10/1 \
    ! resnetbackbone num-threads="$jobs" ! tee name=t \
    t. ! queue ! featuresink location="$out/features" levels=res4,res5 dtype=float16 \
    t. ! queue ! featureoverlay level=res4 ! videoconvert ! pngenc ! multifilesink location="$out/overlay-%02d.png"
  echo "setup.sh: features in $out/features/ (index.json, *.safetensors), heatmaps in $out/overlay-*.png"
else
  # The engines' measured choices (tuning.txt) of the test run stay in the build tree.
  BACKBONE_CACHE_DIR="${BACKBONE_CACHE_DIR-$(cd "$build" && pwd)/tuning-cache}" \
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
fi
