#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Test data of the resnetbackbone element (tests/plugin/resnetbackbone_test.cpp).

Run (from the repository root):

    /work/venv-d2/bin/python tests/data/make_plugin.py --detectron2 /work/d2 --out tests/data/plugin

--detectron2 is a detectron2 checkout; nothing of it is copied here: make_goldens.py's shims put it
on sys.path and import detectron2's own config and resnet modules (see make_goldens.py).

Writes (under --out), next to the committed narrow.yaml:
  narrow.pth         torch.save of the state_dict of detectron2's build_resnet_backbone(narrow.yaml),
                     every parameter and FrozenBN statistic drawn from a seeded torch.Generator
  corrupt.pth        the first 4096 bytes of narrow.pth (a truncated zip)
  bad_syntax.yaml    YAML that does not parse
  unknown_key.yaml   a key detectron2's config does not have (MODEL.RESNETS.DEPTHH)
  frame_rgb.npy      a 64x48 RGB uint8 frame [48, 64, 3] (smooth gradients plus a seeded texture)
  d2_<f>.npy         detectron2's features of that frame, f in res2..res5: the frame as BGR float
                     (INPUT.FORMAT BGR), (x - PIXEL_MEAN) / PIXEL_STD as GeneralizedRCNN does,
                     no resize, no padding, through the model with narrow.pth loaded
Deterministic; runs in a few seconds on the CPU.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_goldens as mg  # noqa: E402  (install_shims, randomize_, D2)

SEED = 20261125


def make_frame():
    h, w = 48, 64
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(SEED)
    noise = rng.integers(0, 48, size=(h, w, 3))
    r = 200 * x / (w - 1) + 20
    g = 180 * y / (h - 1) + 30
    b = 120 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    img = np.stack([r, g, b], axis=-1) + noise - 24
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectron2", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    mg.install_shims(args.detectron2)
    out = args.out

    cfg = mg.D2.get_cfg()
    cfg.merge_from_file(os.path.join(out, "narrow.yaml"))
    model = mg.D2.resnet.build_resnet_backbone(cfg, mg.D2.ShapeSpec(channels=3))
    mg.randomize_(model, SEED)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(out, "narrow.pth"))

    with open(os.path.join(out, "narrow.pth"), "rb") as f:
        blob = f.read()
    with open(os.path.join(out, "corrupt.pth"), "wb") as f:
        f.write(blob[:4096])

    with open(os.path.join(out, "bad_syntax.yaml"), "w") as f:
        f.write("# does not parse: an unclosed flow sequence\nMODEL:\n  RESNETS:\n    OUT_FEATURES: [res2, res3\n")
    with open(os.path.join(out, "unknown_key.yaml"), "w") as f:
        f.write("# MODEL.RESNETS.DEPTHH is not a detectron2 config key\nMODEL:\n  RESNETS:\n    DEPTHH: 50\n")

    frame = make_frame()
    np.save(os.path.join(out, "frame_rgb.npy"), frame)
    bgr = torch.from_numpy(frame[:, :, ::-1].copy()).permute(2, 0, 1).float()
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    x = ((bgr - mean) / std).unsqueeze(0)
    with torch.no_grad():
        feats = model(x)
    for name, t in feats.items():
        np.save(os.path.join(out, f"d2_{name}.npy"), t.numpy().astype(np.float32))
        print(name, tuple(t.shape), float(t.abs().mean()))
    total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"wrote {out}: {total} bytes")


if __name__ == "__main__":
    main()
