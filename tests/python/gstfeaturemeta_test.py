# SPDX-License-Identifier: Apache-2.0
"""gstfeaturemeta and the GstFeatureMeta-1.0 typelib on metas made here: every dtype, strides,
offsets, several producers, the accessors of the introspection API and the errors."""

import gc
import unittest

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstFeatureMeta", "1.0")
from gi.repository import Gst, GstFeatureMeta as FM  # noqa: E402
import numpy as np  # noqa: E402

import gstfeaturemeta  # noqa: E402

Gst.init(None)
DIMS = [1, 2, 3, 4]
REF = (np.arange(24, dtype=np.float32).reshape(DIMS) - 11.5) / 4  # exact in float16 and bfloat16


def add_level(meta, name, dtype, data: bytes, strides=None, offset=0, stride=4):
    return meta.add_level(name, dtype, DIMS, strides, stride, FM.FeatureDevice.CPU, 0,
                          Gst.Buffer.new_wrapped(data), offset)


def make_buffer():
    """A buffer with one meta: res2 float32 at an offset, res3 float16, res4 bfloat16, res5
    float32 stored W-major (strides not contiguous NCHW)."""
    buf = Gst.Buffer.new_wrapped(bytes(16))
    m = FM.buffer_add_feature_meta(buf)
    m.unique_id = 7
    m.set_model_name("R-50")
    m.frame_width, m.frame_height = 640, 480
    m.input_width, m.input_height = 800, 600
    m.padded_width, m.padded_height = 800, 608
    m.scale_x = m.scale_y = 1.25
    add_level(m, "res2", FM.FeatureDType.FLOAT32, b"\xff" * 12 + REF.tobytes(), offset=12)
    add_level(m, "res3", FM.FeatureDType.FLOAT16, REF.astype(np.float16).tobytes(), stride=8)
    add_level(m, "res4", FM.FeatureDType.BFLOAT16, (REF.view(np.uint32) >> 16).astype(np.uint16).tobytes(), stride=16)
    wmajor = np.ascontiguousarray(REF.transpose(0, 1, 3, 2))
    add_level(m, "res5", FM.FeatureDType.FLOAT32, wmajor.tobytes(), strides=[24, 12, 1, 3], stride=32)
    return buf


class IntrospectionTest(unittest.TestCase):
    def test_accessors(self):
        buf = make_buffer()
        m = FM.buffer_get_feature_meta(buf)
        self.assertIsNotNone(m)
        self.assertEqual((m.unique_id, m.get_model_name(), m.frame_width, m.scale_x), (7, "R-50", 640, 1.25))
        self.assertEqual(m.get_n_levels(), 4)
        names = [m.get_level_by_index(i).get_name() for i in range(m.get_n_levels())]
        self.assertEqual(names, ["res2", "res3", "res4", "res5"])
        self.assertIsNone(m.get_level_by_index(4))
        lv = m.get_level("res5")
        self.assertEqual(lv.get_dims(), DIMS)
        self.assertEqual(lv.get_strides(), [24, 12, 1, 3])
        self.assertEqual((lv.get_stride(), lv.get_offset(), lv.get_device_id()), (32, 0, 0))
        self.assertEqual(lv.get_dtype(), FM.FeatureDType.FLOAT32)
        self.assertEqual(lv.get_device(), FM.FeatureDevice.CPU)
        self.assertIsInstance(lv.get_data(), Gst.Buffer)
        self.assertEqual(lv.get_data().get_size(), 96)
        self.assertEqual(m.get_level("res2").get_offset(), 12)
        self.assertIsNone(m.get_typed_level("res3", FM.FeatureDType.FLOAT32))
        self.assertEqual(tuple(lv.get_device_pointer())[0], False)  # on the CPU: no device pointer
        r = m.frame_to_feature(m.get_level("res3"), 64, 32)
        self.assertEqual((r.fx, r.fy), (10.0, 5.0))
        self.assertEqual(m.frame_box_to_feature(lv, [0, 0, 64, 128]), [0.0, 0.0, 2.5, 5.0])
        self.assertEqual(FM.buffer_get_feature_meta_by_id(buf, 7).unique_id, 7)
        self.assertIsNone(FM.buffer_get_feature_meta_by_id(buf, 8))
        self.assertIsNone(FM.buffer_get_feature_meta(Gst.Buffer.new()))
        self.assertEqual(FM.feature_dtype_to_string(FM.FeatureDType.BFLOAT16), "bfloat16")
        self.assertEqual(FM.feature_dtype_float16_to_float32(FM.feature_dtype_float32_to_float16(0.5)), 0.5)


class ModuleTest(unittest.TestCase):
    def test_levels_float32_by_default(self):
        feats = gstfeaturemeta.levels(make_buffer())
        self.assertEqual(list(feats), ["res2", "res3", "res4", "res5"])
        for name, a in feats.items():
            self.assertEqual((a.dtype, a.shape), (np.float32, tuple(DIMS)), name)
            self.assertTrue(a.flags.c_contiguous and a.flags.writeable, name)
            np.testing.assert_array_equal(a, REF, err_msg=name)

    def test_levels_float16_on_request(self):
        feats = gstfeaturemeta.levels(make_buffer(), dtype="float16")
        for name, a in feats.items():
            self.assertEqual(a.dtype, np.float16, name)
            np.testing.assert_array_equal(a, REF.astype(np.float16), err_msg=name)
        with self.assertRaisesRegex(ValueError, "dtype must be float32 or float16, found int8"):
            gstfeaturemeta.levels(make_buffer(), dtype="int8")

    def test_mapped_views(self):
        buf = make_buffer()
        with gstfeaturemeta.mapped(buf) as views:
            self.assertEqual({n: v.dtype for n, v in views.items()},
                             {"res2": np.float32, "res3": np.float16, "res4": np.uint16, "res5": np.float32})
            np.testing.assert_array_equal(views["res2"], REF)
            np.testing.assert_array_equal(views["res3"], REF.astype(np.float16))
            np.testing.assert_array_equal(views["res4"], (REF.view(np.uint32) >> 16).astype(np.uint16))
            np.testing.assert_array_equal(views["res5"], REF)
            self.assertEqual(views["res5"].strides, (96, 48, 4, 12))  # the level's strides, in bytes
            for name, v in views.items():
                self.assertFalse(v.flags.writeable, name)
                with self.assertRaises(ValueError):
                    v.flags.writeable = True
            kept = views["res2"]
        self.assertEqual(views, {})  # emptied at the end of the block
        np.testing.assert_array_equal(kept, REF)  # a kept view stays valid
        del kept
        gc.collect()

    def test_meta(self):
        m = gstfeaturemeta.meta(make_buffer())
        self.assertEqual((m.unique_id, m.model_name, m.version), (7, "R-50", 1))
        self.assertEqual((m.frame_width, m.frame_height, m.input_width, m.input_height), (640, 480, 800, 600))
        self.assertEqual((m.padded_width, m.padded_height, m.scale_x, m.scale_y), (800, 608, 1.25, 1.25))
        self.assertEqual(m.levels["res2"], gstfeaturemeta.Level(
            name="res2", dtype="float32", shape=(1, 2, 3, 4), strides=(24, 12, 4, 1), stride=4,
            device="cpu", device_id=0, offset=12))
        self.assertEqual(m.levels["res4"].dtype, "bfloat16")
        self.assertEqual(m.frame_to_feature("res3", 64, 32), (10.0, 5.0))
        self.assertEqual(m.feature_to_frame(m.levels["res3"], 10, 5), (64.0, 32.0))
        self.assertEqual(m.frame_box_to_feature("res5", (0, 0, 64, 128)), (0.0, 0.0, 2.5, 5.0))
        self.assertEqual(m.feature_box_to_frame("res5", (0, 0, 2.5, 5)), (0.0, 0.0, 64.0, 128.0))
        with self.assertRaisesRegex(KeyError, "level 'res6' not in the meta of 'R-50' "
                                              r"\(levels: res2, res3, res4, res5\)"):
            m.frame_to_feature("res6", 0, 0)
        self.assertIn("res4 [1, 2, 3, 4] bfloat16", repr(m))

    def test_several_producers(self):
        buf = make_buffer()
        other = FM.buffer_add_feature_meta(buf)
        other.unique_id = 9
        add_level(other, "stem", FM.FeatureDType.FLOAT32, (REF * 2).tobytes())
        self.assertEqual(list(gstfeaturemeta.levels(buf)), ["res2", "res3", "res4", "res5"])
        feats = gstfeaturemeta.levels(buf, unique_id=9)
        self.assertEqual(list(feats), ["stem"])
        np.testing.assert_array_equal(feats["stem"], REF * 2)
        self.assertIsNone(gstfeaturemeta.meta(buf, unique_id=3))

    def test_errors(self):
        with self.assertRaisesRegex(LookupError, "expected a GstFeatureMeta on the buffer, found none"):
            gstfeaturemeta.levels(Gst.Buffer.new())
        with self.assertRaisesRegex(LookupError, "expected a GstFeatureMeta of unique-id 3 on the buffer"):
            with gstfeaturemeta.mapped(make_buffer(), unique_id=3):
                pass
        with self.assertRaisesRegex(TypeError, "expected a Gst.Buffer \\(or a Gst.Sample\\), found bytes"):
            gstfeaturemeta.levels(b"abc")
        self.assertIsNone(gstfeaturemeta.meta(Gst.Buffer.new()))

    def test_sample(self):
        sample = Gst.Sample.new(make_buffer(), None, None, None)
        np.testing.assert_array_equal(gstfeaturemeta.levels(sample)["res4"], REF)


if __name__ == "__main__":
    unittest.main(verbosity=2)
