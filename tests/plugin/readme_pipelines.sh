#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs the gst-launch-1.0 lines of README.md / setup.sh demo and examples/README.md (with the
# built-in R-50 and seeded weights, small frames, few buffers) and checks what they leave behind.
# Usage: readme_pipelines.sh <output dir>   (GST_PLUGIN_PATH_1_0 points at the build's plugin)
set -eu
out=$1
rm -rf "$out" && mkdir -p "$out"
launch() { echo "+ gst-launch-1.0 $*"; gst-launch-1.0 -q -e "$@"; }

# README / setup.sh demo: test pattern -> resnetbackbone -> featuresink + featureoverlay PNGs.
launch videotestsrc num-buffers=3 pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 \
  ! resnetbackbone num-threads=2 ! tee name=t \
  t. ! queue ! featuresink location="$out/demo/features" levels=res4,res5 dtype=float16 \
  t. ! queue ! featureoverlay level=res4 ! videoconvert ! pngenc ! multifilesink location="$out/demo/overlay-%02d.png"
test -s "$out/demo/features/index.json"
test -s "$out/demo/features/features-00000.safetensors"
grep -q '"frames": 3' "$out/demo/features/index.json"
test -s "$out/demo/overlay-02.png"

# A clip to play with (Motion-JPEG in AVI: base and good plugins only).
launch videotestsrc num-buffers=4 ! video/x-raw,width=160,height=120,framerate=10/1 ! jpegenc ! avimux \
  ! filesink location="$out/clip.avi"

# examples/README.md: a video file -> heatmap video.
launch filesrc location="$out/clip.avi" ! decodebin ! videoconvert \
  ! resnetbackbone out-features=res4,res5 \
  ! featureoverlay level=res5 ! videoconvert ! jpegenc ! avimux ! filesink location="$out/heatmap.avi"
test -s "$out/heatmap.avi"

# examples/README.md: batch feature extraction.
launch uridecodebin uri="file://$out/clip.avi" ! videoconvert \
  ! resnetbackbone \
  ! featuresink location="$out/features/clip" dtype=float16 max-frames=256
grep -q '"frames": 4' "$out/features/clip/index.json"
test -s "$out/features/clip/features-00000.safetensors"
# examples/README.md: a feature pyramid (configs/R-50-FPN.yaml; seeded weights here).
configs=$(cd "$(dirname "$0")/../../configs" && pwd)
launch filesrc location="$out/clip.avi" ! decodebin ! videoconvert \
  ! resnetbackbone config-file="$configs/R-50-FPN.yaml" out-features=p3,p4,p5 \
  ! tee name=t \
  t. ! queue ! featuresink location="$out/features/fpn" dtype=float16 \
  t. ! queue ! featureoverlay level=p4 ! videoconvert ! jpegenc ! avimux ! filesink location="$out/fpn-heatmap.avi"
grep -q '"frames": 4' "$out/features/fpn/index.json"
grep -q '"p4": 16' "$out/features/fpn/index.json"
test -s "$out/fpn-heatmap.avi"
# examples/README.md: four cameras, one model (test sources instead of cameras).
cams=""
for k in 0 1 2 3; do
  cams="$cams videotestsrc num-buffers=3 pattern=$k ! video/x-raw,width=160,height=120,framerate=10/1 ! videoconvert ! resnetbackbone model-instance-id=cams batch-size=4 batch-timeout=20000000 ! featuresink location=$out/cams/cam$k"
done
# shellcheck disable=SC2086
launch $cams
for k in 0 1 2 3; do grep -q '"frames": 3' "$out/cams/cam$k/index.json"; done
echo "readme pipelines: all passed"
