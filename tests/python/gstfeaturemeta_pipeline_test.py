# SPDX-License-Identifier: Apache-2.0
"""gstfeaturemeta on a real pipeline: resnetbackbone (narrow R-50, CPU) and featuresink on the
same frames, read in a pad probe on featuresink's sink pad.

    gstfeaturemeta_pipeline_test.py DATA_DIR WORK_DIR

Checks that levels() equals featuresink's float32 file exactly, that mapped() views equal it and
point into the level's mapped data buffer (no copy), and that views kept after the block (and
after the pipeline is gone) stay valid and release their mapping once dropped."""

import gc
import os
import shutil
import sys
import unittest

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402
import numpy as np  # noqa: E402

import gstfeaturemeta  # noqa: E402
import safetensors_util  # noqa: E402

DATA_DIR, WORK_DIR = sys.argv[1], sys.argv[2]
FRAMES = 3


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class Probe:
    """What the probe saw, checked on the test's thread (an assertion must not fire on the
    streaming thread)."""

    def __init__(self):
        self.copies = []       # per frame: levels()
        self.pts = []
        self.metas = []        # per frame: Meta
        self.checks = []       # per frame: {level: (same address, equal)}
        self.kept = []         # per frame: views kept after mapped()'s block
        self.refcounts = None  # frame 0: memory refcount before, in, after (kept), after del
        self.errors = []

    def __call__(self, pad, info):
        try:
            self.on_buffer(info.get_buffer())
        except Exception as e:  # noqa: BLE001 (reported on the test's thread)
            self.errors.append(f"{type(e).__name__}: {e}")
        return Gst.PadProbeReturn.OK

    def on_buffer(self, buf):
        meta = gstfeaturemeta.meta(buf)
        self.metas.append(meta)
        self.pts.append(buf.pts)
        copies = gstfeaturemeta.levels(buf)
        self.copies.append(copies)
        first = len(self.copies) == 1
        if first:  # the mapping's own reference to the level's memory, seen from outside
            mem = meta._gi_levels["res2"].get_data().peek_memory(0)
            before = mem.mini_object.refcount
        checks = {}
        with gstfeaturemeta.mapped(buf) as views:
            if first:
                inside = mem.mini_object.refcount
            for name, view in views.items():
                lv = meta.levels[name]
                # An independent map of the level's data buffer: the view starts at its data
                # pointer plus the level's offset.
                data = meta._gi_levels[name].get_data()
                info = data.map(Gst.MapFlags.READ)
                base = address(np.frombuffer(info.data, dtype=np.uint8))
                data.unmap(info)
                checks[name] = (address(view) == base + lv.offset, np.array_equal(view, copies[name]),
                                view.flags.writeable, view.flags.owndata)
            kept = {name: view[:, 1:] for name, view in views.items()}
        self.checks.append(checks)
        self.kept.append(kept)
        if first:
            after_block = mem.mini_object.refcount
            probe = kept.pop("res2")
            equal_after = bool(np.array_equal(probe, copies["res2"][:, 1:]))
            del probe
            gc.collect()
            self.refcounts = (before, inside, after_block, mem.mini_object.refcount, equal_after)


class PipelineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        Gst.init(None)
        cls.out = os.path.join(WORK_DIR, "features")
        shutil.rmtree(cls.out, ignore_errors=True)
        pipeline = Gst.parse_launch(
            f"videotestsrc num-buffers={FRAMES} pattern=ball ! video/x-raw,width=96,height=64 "
            f"! resnetbackbone config-file={DATA_DIR}/plugin/narrow.yaml "
            f"weights={DATA_DIR}/plugin/narrow.pth device=cpu num-threads=1 "
            f"! featuresink name=sink location={cls.out}")
        cls.probe = Probe()
        pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, cls.probe)
        pipeline.set_state(Gst.State.PLAYING)
        msg = pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        pipeline.set_state(Gst.State.NULL)
        del pipeline
        gc.collect()
        if msg is None or msg.type != Gst.MessageType.EOS:
            raise AssertionError(f"expected EOS, found {msg.parse_error() if msg else 'a timeout'}")
        cls.files, cls.metadata = safetensors_util.read(os.path.join(cls.out, "features-00000.safetensors"))

    def test_probe_ran_without_errors(self):
        self.assertEqual(self.probe.errors, [])
        self.assertEqual(len(self.probe.copies), FRAMES)

    def test_levels_equal_featuresink_exactly(self):
        names = [n for n in self.files if n != "pts"]
        self.assertEqual(sorted(names), ["res2", "res3", "res4", "res5"])
        for i, copies in enumerate(self.probe.copies):
            self.assertEqual(list(copies), ["res2", "res3", "res4", "res5"])  # producer's order
            for name, a in copies.items():
                expected = self.files[name][i:i + 1]
                self.assertEqual(a.dtype, np.float32, name)
                self.assertEqual(a.shape, expected.shape, name)
                self.assertTrue(a.flags.c_contiguous and a.flags.writeable and a.flags.owndata, name)
                self.assertEqual(a.tobytes(), expected.astype("<f4").tobytes(), f"frame {i} {name}")
        self.assertEqual(list(self.files["pts"]), self.probe.pts)

    def test_mapped_views_are_the_mapped_memory(self):
        for i, checks in enumerate(self.probe.checks):
            self.assertEqual(sorted(checks), ["res2", "res3", "res4", "res5"])
            for name, (same_address, equal, writeable, owndata) in checks.items():
                self.assertTrue(same_address, f"frame {i} {name}: the view is not over the mapped data")
                self.assertTrue(equal, f"frame {i} {name}: the view differs from levels()")
                self.assertFalse(writeable, f"frame {i} {name}: the view is writable")
                self.assertFalse(owndata, f"frame {i} {name}: the view owns (copied) its data")

    def test_kept_view_keeps_then_releases_the_mapping(self):
        before, inside, after_block, after_del, equal_after = self.probe.refcounts
        self.assertEqual(inside, before + 1)       # mapped: the map holds the memory
        self.assertEqual(after_block, before + 1)  # a view kept: still mapped, still valid
        self.assertTrue(equal_after)
        self.assertEqual(after_del, before)        # the view gone: unmapped, nothing leaked

    def test_views_kept_after_the_pipeline_stay_valid(self):
        # The pipeline, its buffers and metas are gone; the kept views still hold their mappings.
        for i, kept in enumerate(self.probe.kept):
            for name, view in kept.items():
                self.assertTrue(np.array_equal(view, self.probe.copies[i][name][:, 1:]), f"frame {i} {name}")

    def test_meta_attributes(self):
        m = self.probe.metas[0]
        self.assertEqual(m.model_name, self.metadata["model_name"])
        self.assertEqual(m.unique_id, 0)
        self.assertEqual((m.frame_width, m.frame_height), (96, 64))
        self.assertEqual((m.input_width, m.input_height), (96, 64))
        self.assertEqual((m.padded_width, m.padded_height), (96, 64))
        self.assertEqual((m.scale_x, m.scale_y), (1.0, 1.0))
        self.assertEqual([lv.stride for lv in m.levels.values()], [4, 8, 16, 32])
        res4 = m.levels["res4"]
        self.assertEqual(res4.shape, (1, 64, 4, 6))
        self.assertEqual(res4.strides, (64 * 4 * 6, 4 * 6, 6, 1))
        self.assertEqual((res4.dtype, res4.device, res4.device_id, res4.device_pointer), ("float32", "cpu", 0, None))
        self.assertEqual(m.frame_to_feature("res4", 48, 32), (3.0, 2.0))
        self.assertEqual(m.frame_box_to_feature(res4, (16, 16, 96, 64)), (1.0, 1.0, 6.0, 4.0))
        self.assertEqual(m.feature_box_to_frame("res5", (0, 0, 3, 2)), (0.0, 0.0, 96.0, 64.0))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
