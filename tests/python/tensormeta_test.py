# SPDX-License-Identifier: Apache-2.0
"""GStreamer's GstTensorMeta from resnetbackbone, read through upstream's GstAnalytics bindings
(GStreamer 1.26 or newer) in a pad probe right after the element, against gstfeaturemeta.

    tensormeta_test.py DATA_DIR

Checks one tensor per level in the GstFeatureMeta's order, id the quark of the level's name,
N,C,H,W dims row-major, float32, the same bytes as gstfeaturemeta.levels() and the same memory
(mapped at the same address: no copy); and that tensor-meta=false leaves it out."""

import gc
import sys
import unittest

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstAnalytics", "1.0")
from gi.repository import GLib, Gst, GstAnalytics  # noqa: E402
import numpy as np  # noqa: E402

import gstfeaturemeta  # noqa: E402

DATA_DIR = sys.argv[1]
FRAMES = 2


def mapped_address(buf: Gst.Buffer) -> int:
    info = buf.map(Gst.MapFlags.READ)
    try:
        return np.frombuffer(info.data, dtype=np.uint8).__array_interface__["data"][0]
    finally:
        buf.unmap(info)


def tensor_dims(t) -> tuple:
    return tuple(t.get_dims())


class Probe:
    """What the probe saw, checked on the test's thread."""

    def __init__(self):
        self.frames = []  # per frame: (levels(), [tensor facts], {level: same memory})
        self.errors = []

    def __call__(self, pad, info):
        try:
            self.on_buffer(info.get_buffer())
        except Exception as e:  # noqa: BLE001 (reported on the test's thread)
            self.errors.append(f"{type(e).__name__}: {e}")
        return Gst.PadProbeReturn.OK

    def on_buffer(self, buf):
        levels = gstfeaturemeta.levels(buf)
        tmeta = GstAnalytics.buffer_get_tensor_meta(buf)
        if tmeta is None:
            self.frames.append((levels, None, None))
            return
        meta = gstfeaturemeta.meta(buf)
        tensors, same_memory = [], {}
        for i in range(tmeta.num_tensors):
            t = tmeta.get(i)
            name = GLib.quark_to_string(t.id)
            dims = tensor_dims(t)
            info = t.data.map(Gst.MapFlags.READ)
            values = np.frombuffer(info.data, dtype=np.float32).copy().reshape(dims)
            t.data.unmap(info)
            tensors.append((name, dims, t.data_type, t.dims_order, values,
                            tmeta.get_index_from_id(GLib.quark_from_string(name)) == i))
            level_data = meta._gi_levels[name].get_data()
            same_memory[name] = mapped_address(t.data) == mapped_address(level_data) + meta.levels[name].offset
        self.frames.append((levels, tensors, same_memory))


def run(tensor_meta: bool) -> Probe:
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={FRAMES} pattern=ball ! video/x-raw,width=96,height=64 "
        f"! resnetbackbone name=backbone config-file={DATA_DIR}/plugin/narrow.yaml "
        f"weights={DATA_DIR}/plugin/narrow.pth device=cpu num-threads=1 "
        f"tensor-meta={'true' if tensor_meta else 'false'} ! fakesink")
    probe = Probe()
    pipeline.get_by_name("backbone").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    del pipeline
    gc.collect()
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise AssertionError(f"expected EOS, found {msg.parse_error() if msg else 'a timeout'}")
    return probe


class TensorMetaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        Gst.init(None)
        cls.on = run(True)
        cls.off = run(False)

    def test_probe_ran_without_errors(self):
        self.assertEqual(self.on.errors, [])
        self.assertEqual(self.off.errors, [])
        self.assertEqual(len(self.on.frames), FRAMES)
        self.assertEqual(len(self.off.frames), FRAMES)

    def test_every_level_is_a_tensor_with_the_same_values(self):
        for i, (levels, tensors, _) in enumerate(self.on.frames):
            self.assertIsNotNone(tensors, f"frame {i}: no GstTensorMeta right after the element")
            self.assertEqual([t[0] for t in tensors], list(levels))  # the GstFeatureMeta's order
            for name, dims, data_type, dims_order, values, found_by_id in tensors:
                self.assertEqual(dims, levels[name].shape, f"frame {i} {name}")
                self.assertEqual(data_type, GstAnalytics.TensorDataType.FLOAT32, f"frame {i} {name}")
                self.assertEqual(dims_order, GstAnalytics.TensorDimOrder.ROW_MAJOR, f"frame {i} {name}")
                self.assertTrue(found_by_id, f"frame {i} {name}")
                self.assertEqual(values.tobytes(), levels[name].tobytes(), f"frame {i} {name}")

    def test_tensors_share_the_levels_memory(self):
        for i, (_, _, same_memory) in enumerate(self.on.frames):
            self.assertEqual(sorted(same_memory), ["res2", "res3", "res4", "res5"])
            for name, same in same_memory.items():
                self.assertTrue(same, f"frame {i} {name}: the tensor's data is not the level's memory")

    def test_property_off_leaves_it_out(self):
        for i, (levels, tensors, _) in enumerate(self.off.frames):
            self.assertEqual(sorted(levels), ["res2", "res3", "res4", "res5"], f"frame {i}")
            self.assertIsNone(tensors, f"frame {i}: a GstTensorMeta with tensor-meta=false")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
