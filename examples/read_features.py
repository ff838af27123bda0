#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""read_features.py: reads the backbone's feature maps in Python, with a pad probe.

    read_features.py [--frames N] [--width W] [--height H] [--config-file F --weights W]
                     [--device cpu|cuda:N|auto] [--level res5]

Runs videotestsrc ! resnetbackbone ! fakesink and, in a buffer probe on resnetbackbone's source
pad, prints for every frame the meta (model, unique-id, geometry), each level's shape and dtype,
and a pooled embedding: the global average of one level (res5 by default; the meta's last level
when it has no res5, e.g. p6 with an FPN config) over H and W, L2-normalised, a [C] vector as
retrieval and tracking re-identification use it.

Needs python3-gst-1.0, python3-numpy and the gstfeaturemeta module with its typelib (Debian
packages python3-gstfeaturemeta, gir1.2-gstfeaturemeta-1.0). From a build tree:

    export GST_PLUGIN_PATH=$PWD/build/lib/gstreamer-1.0 PYTHONPATH=$PWD/python \
           GI_TYPELIB_PATH=$PWD/build/lib/girepository-1.0 LD_LIBRARY_PATH=$PWD/build/lib
    /usr/bin/python3 examples/read_features.py --frames 3
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402
import numpy as np  # noqa: E402

import gstfeaturemeta  # noqa: E402


def pooled_embedding(level: np.ndarray) -> np.ndarray:
    """Global average pooling over H and W of frame 0, L2-normalised: a [C] vector."""
    v = level[0].mean(axis=(1, 2), dtype=np.float64)
    n = np.linalg.norm(v)
    return (v / n if n > 0 else v).astype(np.float32)


def on_buffer(pad, info, args, counter):
    buffer = info.get_buffer()
    meta = gstfeaturemeta.meta(buffer)
    if meta is None:
        print(f"frame {counter[0]}: no features")
    else:
        feats = gstfeaturemeta.levels(buffer)  # {name: float32 ndarray [N, C, H, W]}, a copy
        print(f"frame {counter[0]} pts {buffer.pts}: {meta.model_name} (unique-id {meta.unique_id}), "
              f"frame {meta.frame_width}x{meta.frame_height}, input {meta.input_width}x{meta.input_height}, "
              f"padded {meta.padded_width}x{meta.padded_height}")
        for name, a in feats.items():
            lv = meta.levels[name]
            print(f"  {name}: {list(a.shape)} {lv.dtype} on {lv.device}, stride {lv.stride}, "
                  f"mean {a.mean():.6g}")
        level = args.level if args.level in feats else list(feats)[-1]
        e = pooled_embedding(feats[level])
        print(f"  embedding ({level}, {e.shape[0]} dims): " + " ".join(f"{x:.4f}" for x in e[:8])
              + (" ..." if e.shape[0] > 8 else ""))
    counter[0] += 1
    return Gst.PadProbeReturn.OK


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--config-file")
    p.add_argument("--weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--level", default="res5", help="level of the pooled embedding (e.g. res5, p5)")
    args = p.parse_args(argv)

    Gst.init(None)
    props = f" device={args.device}"
    if args.config_file:
        props += f' config-file="{args.config_file}"'
    if args.weights:
        props += f' weights="{args.weights}"'
    desc = (f"videotestsrc num-buffers={args.frames} ! video/x-raw,width={args.width},height={args.height} "
            f"! resnetbackbone name=backbone{props} ! fakesink")
    pipeline = Gst.parse_launch(desc)
    counter = [0]
    pipeline.get_by_name("backbone").get_static_pad("src").add_probe(
        Gst.PadProbeType.BUFFER, on_buffer, args, counter)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg.type == Gst.MessageType.ERROR:
        err, dbg = msg.parse_error()
        print(f"read_features.py: {err.message} ({dbg})", file=sys.stderr)
        return 1
    print(f"read_features.py: {counter[0]} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
