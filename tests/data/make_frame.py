#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden references for tests/backbone/frame_test.cpp: YUV frames converted by GStreamer's own
videoconvert (code this project did not write).

Run from the repository root (needs numpy and gst-launch-1.0 with the base plugins; capssetter from
gst-plugins-good for the chroma-site cases):
    /usr/bin/python3 tests/data/make_frame.py
It writes tests/data/frame/:
  <fmt>_<w>x<h>.yuv   random 8-bit frames (seeded) in GStreamer's default layout for that format
                      (rows padded to 4 bytes, planes one after the other), exactly as fed to
                      rawvideoparse;
  <case>.rgb          what `rawvideoparse format=<fmt> colorimetry=<c> ! [capssetter chroma-site=..] !
                      videoconvert ! video/x-raw,format=RGB` gives, row padding removed ([H, W, 3]);
  gray8_17x11.gray, gray8_17x11.rgb   GRAY8 (rows padded to 4 bytes) and videoconvert's RGB of it;
  manifest.txt        one line per case:
                      case yuv_file format width height matrix range chroma_site
                      stride0 stride1 stride2 offset1 offset2 rgb_file
"""
import os
import subprocess
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frame")

# GstVideoColorimetry strings "range:matrix:transfer:primaries" (range 1 = 0_255, 2 = 16_235;
# matrix 2 = FCC, 3 = BT709, 4 = BT601, 5 = SMPTE240M, 6 = BT2020).
COLORIMETRIES = [
    ("bt601", "2:4:0:0", "BT601", "Limited"),
    ("bt601full", "1:4:0:0", "BT601", "Full"),
    ("bt709", "2:3:0:0", "BT709", "Limited"),
    ("bt709full", "1:3:0:0", "BT709", "Full"),
    ("bt2020", "2:6:0:0", "BT2020", "Limited"),
    ("bt2020full", "1:6:0:0", "BT2020", "Full"),
    ("fcc", "2:2:0:0", "FCC", "Limited"),
    ("smpte240m", "2:5:0:0", "SMPTE240M", "Limited"),
]
SIZES = [(17, 11), (64, 48)]
# Tiny frames (edges everywhere), with two colorimetries only.
TINY_SIZES = [(1, 1), (2, 2), (3, 5), (6, 3)]
TINY_COLORIMETRIES = ("bt709", "bt601full")
# NV12 chroma sites through capssetter (I420's fast path ignores the site).
SITES = [("mpeg2", "HCosited"), ("cosited", "Cosited"), ("v-cosited", "VCosited")]


def ru4(x):
    return (x + 3) // 4 * 4


def ru2(x):
    return (x + 1) // 2 * 2


def layout(fmt, w, h):
    """GStreamer's default strides and plane offsets (gst_video_info_set_format)."""
    s0 = ru4(w)
    if fmt == "i420":
        s1 = ru4(ru2(w) // 2)
        o1 = s0 * ru2(h)
        o2 = o1 + s1 * (ru2(h) // 2)
        size = o2 + s1 * (ru2(h) // 2)
        return (s0, s1, s1), (o1, o2), size
    o1 = s0 * ru2(h)
    return (s0, s0, 0), (o1, 0), o1 + s0 * (ru2(h) // 2)


def make_input(fmt, w, h, seed):
    rng = np.random.default_rng(seed)
    cw, ch = (w + 1) // 2, (h + 1) // 2
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)
    u = rng.integers(0, 256, (ch, cw), dtype=np.uint8)
    v = rng.integers(0, 256, (ch, cw), dtype=np.uint8)
    strides, offsets, size = layout(fmt, w, h)
    buf = np.zeros(size, np.uint8)  # padding bytes stay 0

    def put(offset, stride, a):
        for r in range(a.shape[0]):
            buf[offset + r * stride: offset + r * stride + a.shape[1]] = a[r]

    put(0, strides[0], y)
    if fmt == "i420":
        put(offsets[0], strides[1], u)
        put(offsets[1], strides[2], v)
    else:
        put(offsets[0], strides[1], np.stack([u, v], -1).reshape(ch, 2 * cw))
    return buf, strides, offsets


def videoconvert(path, fmt, w, h, size, colorimetry, site=None):
    out = path + ".out"
    setter = f" ! capssetter caps=video/x-raw,chroma-site={site}" if site else ""
    cmd = (f"gst-launch-1.0 -q filesrc location={path} blocksize={size} ! rawvideoparse format={fmt} "
           f"width={w} height={h} framerate=1/1{' colorimetry=' + colorimetry if colorimetry else ''}{setter} ! videoconvert ! "
           f"video/x-raw,format=RGB ! filesink location={out}")
    subprocess.run(cmd, shell=True, check=True)
    data = np.fromfile(out, np.uint8)
    os.remove(out)
    if data.size != ru4(3 * w) * h:
        sys.exit(f"unexpected videoconvert output size {data.size} for {w}x{h}")
    return data.reshape(h, ru4(3 * w))[:, : 3 * w].reshape(h, w, 3)


def main():
    os.makedirs(OUT, exist_ok=True)
    version = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True, text=True).stdout.split("\n")[1]
    lines = [f"# made by tests/data/make_frame.py with {version}"]
    seed = 0
    for fmt in ("nv12", "i420"):
        for w, h in SIZES + TINY_SIZES:
            seed += 1
            buf, strides, offsets = make_input(fmt, w, h, seed)
            yuv = f"{fmt}_{w}x{h}.yuv"
            buf.tofile(os.path.join(OUT, yuv))
            cases = [(name, c, m, r, None, "Center") for name, c, m, r in COLORIMETRIES
                     if (w, h) in SIZES or name in TINY_COLORIMETRIES]
            if fmt == "nv12" and (w, h) in (SIZES[0], TINY_SIZES[2]):
                cases += [(f"bt709_{s}", "2:3:0:0", "BT709", "Limited", s, site) for s, site in SITES]
            for name, colorimetry, matrix, rng, gst_site, site in cases:
                case = f"{fmt}_{w}x{h}_{name}"
                rgb = videoconvert(os.path.join(OUT, yuv), fmt, w, h, buf.size, colorimetry, gst_site)
                rgb.tofile(os.path.join(OUT, case + ".rgb"))
                lines.append(f"{case} {yuv} {fmt.upper()} {w} {h} {matrix} {rng} {site} "
                             f"{strides[0]} {strides[1]} {strides[2]} {offsets[0]} {offsets[1]} {case}.rgb")
    # GRAY8 -> RGB with rawvideoparse's default GRAY8 colorimetry (videoconvert repeats the value in the
    # three channels; a colorimetry with an unknown matrix would give R = Y, G = B = 128 instead).
    w, h = SIZES[0]
    gray = np.random.default_rng(100).integers(0, 256, (h, ru4(w)), dtype=np.uint8)
    gray.tofile(os.path.join(OUT, "gray8_17x11.gray"))
    rgb = videoconvert(os.path.join(OUT, "gray8_17x11.gray"), "gray8", w, h, gray.size, None)
    rgb.tofile(os.path.join(OUT, "gray8_17x11.rgb"))
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines) - 1} cases written to {OUT}")


if __name__ == "__main__":
    main()
