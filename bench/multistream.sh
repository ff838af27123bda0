#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Many streams, one model: N camera-like streams (videotestsrc, WxH RGB) into R-50 in one
# gst-launch-1.0 process, side by side in one run:
#   (a) N resnetbackbone elements with private models, at num-threads=0 (each every core) and at
#       num-threads=1 (the cores split between them);
#   (b) one shared instance (model-instance-id) with batch-size N.
# For each: total frames per second over the streams (frames / wall time, model load excluded by
# timing the run with and without frames) and the process's peak RSS (/usr/bin/time). The machine's
# CPU heads the report.
#
#   GST_PLUGIN_PATH_1_0=$PWD/build/lib/gstreamer-1.0 bench/multistream.sh [--streams 4] [--frames 60]
#       [--width 640] [--height 480] [--config configs/R-50.yaml] [--out-features res4]
#       [--batch-timeout 0] [--omp-passive]
# --omp-passive runs every variant with OMP_WAIT_POLICY=passive (the README's advice for busy
# machines); by default the environment is left as a user's is.
set -eu

streams=4 frames=60 width=640 height=480 config=configs/R-50.yaml out_features=res4 batch_timeout=0 omp_env=""
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) streams=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    --width) width=$2; shift 2 ;;
    --height) height=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --out-features) out_features=$2; shift 2 ;;
    --batch-timeout) batch_timeout=$2; shift 2 ;;
    --omp-passive) omp_env="OMP_WAIT_POLICY=passive"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v gst-launch-1.0 >/dev/null || { echo "gst-launch-1.0 is missing" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

# One pipeline description with `streams` branches; $1: extra resnetbackbone properties; $2: frames.
pipeline() {
  extra=$1 n=$2 i=0 line=""
  while [ "$i" -lt "$streams" ]; do
    line="$line videotestsrc num-buffers=$n pattern=ball is-live=false ! video/x-raw,format=RGB,width=$width,height=$height,framerate=30/1 ! resnetbackbone config-file=$config out-features=$out_features device=cpu engine=onednn pool-size=0 qos=false $extra ! fakesink sync=false"
    i=$((i + 1))
  done
  echo "$line"
}

# Runs one variant: prints "seconds peak_rss_kib".
run() {
  extra=$1 n=$2
  # shellcheck disable=SC2046
  /usr/bin/time -f "%e %M" -o /tmp/multistream.$$ env $omp_env gst-launch-1.0 -q $(pipeline "$extra" "$n") \
    >/dev/null 2>/tmp/multistream.err.$$ || { cat /tmp/multistream.err.$$ >&2; exit 1; }
  tail -n 1 /tmp/multistream.$$
}

measure() {
  label=$1 extra=$2
  set -- $(run "$extra" 1)        # load + one frame per stream
  t0=$1
  set -- $(run "$extra" "$frames")
  t1=$1 rss=$2
  fps=$(awk -v n="$streams" -v f="$frames" -v a="$t0" -v b="$t1" 'BEGIN { d = b - a; if (d <= 0) d = 1e-9; printf "%.2f", n * (f - 1) / d }')
  printf '%-44s %10s %14s\n' "$label" "$fps" "$((rss / 1024))"
  echo "$label|$fps|$rss" >> /tmp/multistream.rows.$$
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "CPU: $cpu, $(nproc) cores; ${omp_env:-OMP_WAIT_POLICY unset}; $streams streams of ${width}x$height RGB into $(basename "$config") (out-features $out_features, onednn fp32, pool-size 0, feature-memory-limit default), $frames frames each"
printf '%-44s %10s %14s\n' "variant" "frames/s" "peak RSS MiB"
: > /tmp/multistream.rows.$$
measure "(a) private models, num-threads=0" "num-threads=0"
measure "(a) private models, num-threads=1" "num-threads=1"
measure "(b) shared instance, batch-size=$streams" "model-instance-id=cams batch-size=$streams batch-timeout=$batch_timeout num-threads=0"
awk -F'|' '{ fps[NR] = $2; rss[NR] = $3 } END {
  best = fps[1] > fps[2] ? 1 : 2
  printf "ratio (b)/(a) throughput: %.2fx against (a) at num-threads=%s (the faster (a)); peak RSS (b)/(a): %.2fx (against num-threads=0), %.2fx (num-threads=1)\n",
    fps[3] / fps[best], best == 1 ? "0" : "1", rss[3] / rss[1], rss[3] / rss[2] }' /tmp/multistream.rows.$$
rm -f /tmp/multistream.$$ /tmp/multistream.err.$$ /tmp/multistream.rows.$$
