# SPDX-License-Identifier: Apache-2.0
"""The Python examples as a user runs them:

    examples_test.py SOURCE_DIR WORK_DIR read_features|featurestats

- examples/read_features.py (a pad probe) prints every frame's levels and embedding;
- the featurestats element of examples/plugins/python in gst-launch-1.0 (GST_PLUGIN_PATH holds
  examples/plugins; gst-python's plugin loader, libgstpython, loads it) posts per-frame statistics
  that match featuresink's file of the same frames. Skipped (exit 77) without the loader
  (Debian package gstreamer1.0-python3-plugin-loader)."""

import os
import re
import shutil
import subprocess
import sys
import unittest

import numpy as np

import safetensors_util

SOURCE_DIR, WORK_DIR = sys.argv[1], sys.argv[2]
DATA = os.path.join(SOURCE_DIR, "tests", "data", "plugin")
MODEL = f"config-file={DATA}/narrow.yaml weights={DATA}/narrow.pth device=cpu num-threads=1"


def run(cmd, env=None):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p.stdout


class ReadFeaturesTest(unittest.TestCase):
    def test_prints_levels_and_embedding(self):
        out = run([sys.executable, os.path.join(SOURCE_DIR, "examples", "read_features.py"), "--frames", "2",
                   "--width", "64", "--height", "48", "--device", "cpu", "--config-file", f"{DATA}/narrow.yaml",
                   "--weights", f"{DATA}/narrow.pth"])
        self.assertIn("read_features.py: 2 frames", out)
        self.assertEqual(len(re.findall(r"^frame \d pts \d+: R-50 \(unique-id 0\), frame 64x48", out, re.M)), 2)
        self.assertIn("  res2: [1, 16, 12, 16] float32 on cpu, stride 4, mean ", out)
        self.assertIn("  res5: [1, 128, 2, 2] float32 on cpu, stride 32, mean ", out)
        emb = re.search(r"embedding \(res5, 128 dims\): ((?:-?\d\.\d{4} ){7}-?\d\.\d{4}) \.\.\.", out)
        self.assertIsNotNone(emb, out)


def parse_messages(out):
    """The featurestats element messages that gst-launch-1.0 -m prints, as dicts."""
    msgs = []
    for line in out.splitlines():
        m = re.search(r'\(element\): featurestats, (.*);$', line)
        if m:
            fields = dict(re.findall(r"([a-z0-9-]+)=\([a-z0-9]+\)([^,]+)", m.group(1)))
            msgs.append(fields)
    return msgs


class FeatureStatsTest(unittest.TestCase):
    def test_statistics_match_featuresink(self):
        out_dir = os.path.join(WORK_DIR, "featurestats")
        shutil.rmtree(out_dir, ignore_errors=True)
        out = run(["gst-launch-1.0", "-m", "videotestsrc", "num-buffers=3", "pattern=ball", "!",
                   "video/x-raw,width=64,height=48", "!", "resnetbackbone", *MODEL.split(), "!",
                   "featurestats", "levels=res4,res5", "!", "featuresink", f"location={out_dir}"])
        msgs = parse_messages(out)
        self.assertEqual(len(msgs), 3, out)
        files, md = safetensors_util.read(os.path.join(out_dir, "features-00000.safetensors"))
        for i, msg in enumerate(msgs):
            self.assertEqual(int(msg["frame"]), i)
            self.assertEqual(int(msg["pts"]), int(files["pts"][i]))
            self.assertEqual(msg["model-name"], md["model_name"])
            self.assertNotIn("res2-mean", msg)  # levels=res4,res5
            for level in ("res4", "res5"):
                a = files[level][i].astype(np.float64)
                for stat, value in (("mean", a.mean()), ("std", a.std()), ("min", a.min()),
                                    ("max", a.max()), ("active", (a > 0).mean())):
                    self.assertAlmostEqual(float(msg[f"{level}-{stat}"]), value, places=9,
                                           msg=f"frame {i} {level}-{stat}")

    def test_unknown_level_is_an_error(self):
        p = subprocess.run(["gst-launch-1.0", "videotestsrc", "num-buffers=1", "!", "video/x-raw,width=64,height=48",
                            "!", "resnetbackbone", *MODEL.split(), "!", "featurestats", "levels=res7", "!",
                            "fakesink"], capture_output=True, text=True, timeout=120)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("levels property names res7, the meta has res2, res3, res4, res5", p.stdout + p.stderr)


if __name__ == "__main__":
    which = sys.argv[3] if len(sys.argv) > 3 else ""
    if which == "featurestats":
        if subprocess.run(["gst-inspect-1.0", "python"], capture_output=True).returncode != 0:
            print("examples_test: skipped: no python plugin loader for GStreamer (libgstpython; "
                  "apt-get install gstreamer1.0-python3-plugin-loader)")
            sys.exit(77)
        case = FeatureStatsTest
    elif which == "read_features":
        case = ReadFeaturesTest
    else:
        sys.exit(f"examples_test: expected read_features or featurestats as the third argument, found {which!r}")
    result = unittest.TextTestRunner(verbosity=2).run(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    sys.exit(0 if result.wasSuccessful() else 1)
