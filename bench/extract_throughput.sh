#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# extract-throughput: backbone-extract's throughput against the backbone's own.
#
#   bench/extract_throughput.sh [BUILD_DIR (default build)] 
#   env: FRAMES (100) ROUNDS (3) THREADS (nproc) WIDTH (640) HEIGHT (480) CONFIG (configs/R-18.yaml)
#        WEIGHTS (none: seeded weights; the timing is the same)
#
# 1. Makes an H.264 file (x264enc ! mp4mux, FRAMES frames of WIDTHxHEIGHT at 30 fps).
# 2. The backbone alone: build/bin/element-overhead's "backbone alone" figure, i.e. the backbone
#    library (create_engine + forward) on a WIDTHxHEIGHT I420 frame preprocessed once, outside the
#    timing, FRAMES frames back to back after a warm-up (median of its rounds). The work of a
#    forward pass does not depend on the pixel values, so this is its cost on the file's frames.
# 3. Extraction: backbone-extract on the file, every frame, as a user runs it (decoding,
#    colour conversion, the element, featuresink's writing), timed three ways from its sidecar
#    and the clock: "steady" = the sidecar's frames_per_second_after_first_frame (first to last
#    frame at the sink: like the backbone figure, without model building and warm-up);
#    "pipeline" = frames / timing.seconds (pipeline start to EOS, model loading included);
#    "process" = frames / the process's wall time (GStreamer init, plugin scan, hashing, manifest).
# The two are alternated ROUNDS times so that the noise of a shared machine falls on both; the
# medians are compared. Prints one JSON line at the end; exit 0 when the steady extraction rate
# reaches 90% of the backbone's throughput, 1 when not, 2 on an error.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$here/build}" && pwd)
frames=${FRAMES:-100}
rounds=${ROUNDS:-3}
threads=${THREADS:-$(nproc)}
width=${WIDTH:-640}
height=${HEIGHT:-480}
config=${CONFIG:-$here/configs/R-18.yaml}
weights=${WEIGHTS:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GST_PLUGIN_PATH_1_0="$build/lib/gstreamer-1.0${GST_PLUGIN_PATH_1_0:+:$GST_PLUGIN_PATH_1_0}"

for tool in "$build/bin/backbone-extract" "$build/bin/element-overhead"; do
  [ -x "$tool" ] || { echo "extract-throughput: $tool not built" >&2; exit 2; }
done
gst-inspect-1.0 x264enc > /dev/null 2>&1 || { echo "extract-throughput: x264enc missing (gstreamer1.0-plugins-ugly)" >&2; exit 2; }

video="$work/clip.mp4"
gst-launch-1.0 -q videotestsrc num-buffers="$frames" pattern=ball \
  ! "video/x-raw,width=$width,height=$height,framerate=30/1" ! x264enc ! mp4mux ! filesink location="$video"

wargs=()
[ -n "$weights" ] && wargs=(--weights "$weights")
echo "extract-throughput: $(basename "$config") at ${width}x${height}, $frames frames, $threads threads, $rounds rounds; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
backbone=() steady=() extract=() wall=()
for r in $(seq 1 "$rounds"); do
  "$build/bin/element-overhead" --config-file "$config" "${wargs[@]}" --width "$width" --height "$height" \
    --format I420 --frames "$frames" --warmup 3 --rounds 1 --pairs 0 --threads "$threads" --memory-frames 0 \
    --no-verdict > "$work/overhead.txt" 2>&1 || { cat "$work/overhead.txt" >&2; exit 2; }
  b=$(tail -n 1 "$work/overhead.txt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backbone_median_ms"])')
  rm -rf "$work/out"
  t0=$(date +%s.%N)
  "$build/bin/backbone-extract" "$video" -o "$work/out" --config-file "$config" "${wargs[@]}" \
    --threads "$threads" -q 2> "$work/extract.txt" || { cat "$work/extract.txt" >&2; exit 2; }
  t1=$(date +%s.%N)
  read -r n s sf < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); t=j["timing"]; print(j["frames"], t["seconds"], t["frames_per_second_after_first_frame"])' \
    "$work/out/clip.mp4/extract.json")
  [ "$n" = "$frames" ] || { echo "extract-throughput: $n frames extracted, expected $frames" >&2; exit 2; }
  bf=$(python3 -c "print(1000.0 / $b)")
  ef=$(python3 -c "print($n / $s)")
  wf=$(python3 -c "print($n / ($t1 - $t0))")
  printf 'round %d: backbone alone %.2f frames/s; extraction %.2f frames/s steady, %.2f (pipeline), %.2f (whole process)\n' \
    "$r" "$bf" "$sf" "$ef" "$wf"
  backbone+=("$bf") steady+=("$sf") extract+=("$ef") wall+=("$wf")
done
python3 - "${backbone[*]}" "${extract[*]}" "${wall[*]}" "$frames" "$width" "$height" "$threads" "$(basename "$config")" "${steady[*]}" <<'PY'
import json, statistics, sys, os
b, e, w, st = ([float(x) for x in a.split()] for a in sys.argv[1:4] + sys.argv[9:10])
mb, me, mw, ms = statistics.median(b), statistics.median(e), statistics.median(w), statistics.median(st)
ratio = ms / mb
print("median: backbone alone %.2f frames/s; extraction steady %.2f frames/s = %.1f%%, pipeline with model loading "
      "%.2f = %.1f%%, whole process %.2f = %.1f%%; target 90%% (steady): %s"
      % (mb, ms, 100 * ratio, me, 100 * me / mb, mw, 100 * mw / mb, "PASS" if ratio >= 0.9 else "FAIL"))
print("load average at the end: %s" % open("/proc/loadavg").read().split()[:3])
print(json.dumps({"benchmark": "extract-throughput", "config": sys.argv[8], "width": int(sys.argv[5]),
                  "height": int(sys.argv[6]), "frames": int(sys.argv[4]), "threads": int(sys.argv[7]),
                  "cores": os.cpu_count(), "backbone_fps": b, "extract_steady_fps": st, "extract_fps": e, "extract_process_fps": w,
                  "backbone_fps_median": mb, "extract_steady_fps_median": ms, "extract_fps_median": me, "ratio": ratio, "pass": ratio >= 0.9}))
sys.exit(0 if ratio >= 0.9 else 1)
PY
