#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden references for the ResNet backbone, made with detectron2's OWN modules and torchvision.

Run (from the repository root):

    /work/venv-d2/bin/python tests/data/make_goldens.py --detectron2 /work/d2 --out tests/data/resnet

--detectron2 is a detectron2 checkout (the folder that holds detectron2/ and tools/). Nothing of it
is copied into this repository: the script puts it on sys.path and imports
detectron2/modeling/backbone/resnet.py, detectron2/layers/* and detectron2/config/* from there.
Needs torch (tested with Debian's 1.13), torchvision (0.14), numpy, PyYAML, fvcore, yacs, iopath,
omegaconf. Runs on CPU in float32, in about 10 seconds. The output is deterministic (seeded
torch.Generator per case).

Shims (only for what cannot be imported on a CPU-only machine without detectron2's build; see
install_shims()):
  1. `cloudpickle` (imported by detectron2/config/lazy.py, used only by LazyConfig.save) is a stub.
  2. `detectron2._C` (the compiled extension) is an empty stub module, so that
     detectron2/layers/deform_conv.py keeps its real DeformConv / ModulatedDeformConv classes instead
     of replacing them with dummies. The two kernel entry points that those classes call,
     deform_conv.deform_conv and deform_conv.modulated_deform_conv (CUDA-only in detectron2), are
     replaced by torchvision.ops.deform_conv2d with the same semantics (offset layout
     [N, G*2*kh*kw, H, W] as (dy, dx) pairs per kernel tap, mask [N, G*kh*kw, H, W], zero outside the
     image, groups, deformable_groups). check_deform_shim() compares the replacement with a direct
     float64 re-implementation of detectron2's CUDA im2col kernel (deform_conv_cuda_kernel.cu) on a
     small case with groups and deformable groups, before anything else runs.
  3. detectron2/modeling/__init__.py and detectron2/modeling/backbone/__init__.py import the whole
     model zoo (meta-architectures, ROI heads, structures -> pycocotools, ...), which is not
     installed here. Both packages are registered as plain namespace packages pointing at the real
     folders, so `detectron2.modeling.backbone.resnet` (and its imports .backbone, .build) are the
     real files, but the unrelated siblings are not imported.

Output (under --out): one folder per case with weights.pth (torch.save of the model's state_dict:
detectron2 names, or torchvision names for the tv_* cases), input.npy (float32 NCHW), <feature>.npy
per output feature, config.yaml for config-built cases, plus manifest.json and README.md.
"""

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch
import torchvision
import yaml
from torch import nn

# Filled by install_shims(): detectron2 modules.
D2 = types.SimpleNamespace()


# --------------------------------------------------------------------------------------------
# Shims
# --------------------------------------------------------------------------------------------
def _tv_deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1,
                    deformable_groups=1, im2col_step=64):
    """Replacement of detectron2.layers.deform_conv.deform_conv (_DeformConv.apply)."""
    from torchvision.ops import deform_conv2d

    if input.dim() != 4:
        raise ValueError("Expected 4D tensor as input, got {}D tensor instead.".format(input.dim()))
    kh, kw = weight.shape[2:]
    assert input.shape[1] == weight.shape[1] * groups, (input.shape, weight.shape, groups)
    assert offset.shape[1] == 2 * deformable_groups * kh * kw, (offset.shape, deformable_groups)
    return deform_conv2d(input, offset, weight, None, stride=stride, padding=padding, dilation=dilation)


def _tv_modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1,
                              groups=1, deformable_groups=1):
    """Replacement of detectron2.layers.deform_conv.modulated_deform_conv."""
    from torchvision.ops import deform_conv2d

    kh, kw = weight.shape[2:]
    assert input.shape[1] == weight.shape[1] * groups, (input.shape, weight.shape, groups)
    assert offset.shape[1] == 2 * deformable_groups * kh * kw, (offset.shape, deformable_groups)
    assert mask.shape[1] == deformable_groups * kh * kw, (mask.shape, deformable_groups)
    return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                         mask=mask)


def install_shims(d2_root):
    d2_root = os.path.abspath(d2_root)
    if not os.path.isfile(os.path.join(d2_root, "detectron2", "modeling", "backbone", "resnet.py")):
        sys.exit(f"--detectron2 {d2_root}: no detectron2/modeling/backbone/resnet.py there")
    sys.path.insert(0, d2_root)

    # (1) cloudpickle: only LazyConfig.save uses it.
    if "cloudpickle" not in sys.modules:
        try:
            import cloudpickle  # noqa: F401
        except ImportError:
            sys.modules["cloudpickle"] = types.ModuleType("cloudpickle")

    import detectron2

    assert os.path.dirname(os.path.abspath(detectron2.__file__)) == os.path.join(d2_root, "detectron2"), \
        f"imported detectron2 from {detectron2.__file__}, not from {d2_root}"

    # (2) detectron2._C: an empty module whose attributes fail loudly.
    class _NoC(types.ModuleType):
        def __getattr__(self, name):
            raise RuntimeError(f"detectron2._C.{name} is not available (shimmed by make_goldens.py)")

    sys.modules["detectron2._C"] = _NoC("detectron2._C")

    # (3) skip the model-zoo-wide package __init__ files.
    for name in ["detectron2.modeling", "detectron2.modeling.backbone"]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(d2_root, *name.split("."))]
        pkg.__package__ = name
        sys.modules[name] = pkg

    import detectron2.layers.deform_conv as dc
    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
    from detectron2.layers.batch_norm import LayerNorm
    from detectron2.modeling.backbone import resnet

    assert isinstance(dc.DeformConv, type) and issubclass(dc.DeformConv, nn.Module), dc.DeformConv
    assert resnet.DeformConv is dc.DeformConv and resnet.ModulatedDeformConv is dc.ModulatedDeformConv
    # DeformConv.forward / ModulatedDeformConv.forward look these names up in the module globals.
    dc.deform_conv = _tv_deform_conv
    dc.modulated_deform_conv = _tv_modulated_deform_conv

    D2.root = d2_root
    D2.get_cfg = get_cfg
    D2.ShapeSpec = ShapeSpec
    D2.FrozenBatchNorm2d = FrozenBatchNorm2d
    D2.LayerNorm = LayerNorm
    D2.DeformConv = dc.DeformConv
    D2.ModulatedDeformConv = dc.ModulatedDeformConv
    D2.resnet = resnet


def _naive_deform_conv(x, offset, mask, weight, bias, stride, pad, dil, groups, dg):
    """float64 numpy transcription of detectron2's (modulated_)deformable_im2col CUDA kernel + GEMM."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    K = kh * kw
    Ho = (H + 2 * pad - (dil * (kh - 1) + 1)) // stride + 1
    Wo = (W + 2 * pad - (dil * (kw - 1) + 1)) // stride + 1
    cols = np.zeros((N, C, K, Ho, Wo))
    ys = np.arange(Ho)[:, None] * stride - pad
    xs = np.arange(Wo)[None, :] * stride - pad
    cpg = C // dg
    for n in range(N):
        for c in range(C):
            g = c // cpg
            img = x[n, c]
            for i in range(kh):
                for j in range(kw):
                    k = i * kw + j
                    h = ys + i * dil + offset[n, g * 2 * K + 2 * k]
                    w = xs + j * dil + offset[n, g * 2 * K + 2 * k + 1]
                    inside = (h > -1) & (w > -1) & (h < H) & (w < W)
                    hl = np.floor(h).astype(np.int64)
                    wl = np.floor(w).astype(np.int64)
                    lh, lw = h - hl, w - wl
                    val = np.zeros_like(h)
                    for hh, ww, wt in [(hl, wl, (1 - lh) * (1 - lw)), (hl, wl + 1, (1 - lh) * lw),
                                       (hl + 1, wl, lh * (1 - lw)), (hl + 1, wl + 1, lh * lw)]:
                        ok = inside & (hh >= 0) & (ww >= 0) & (hh <= H - 1) & (ww <= W - 1)
                        val += np.where(ok, img[np.clip(hh, 0, H - 1), np.clip(ww, 0, W - 1)], 0.0) * wt
                    m = 1.0 if mask is None else mask[n, g * K + k]
                    cols[n, c, k] = np.where(inside, val, 0.0) * m
    out = np.zeros((N, O, Ho, Wo))
    opg = O // groups
    for o in range(O):
        gi = o // opg
        out[:, o] = np.einsum("ck,nckhw->nhw", weight[o].reshape(Cg, K), cols[:, gi * Cg:(gi + 1) * Cg])
        if bias is not None:
            out[:, o] += bias[o]
    return out


def check_deform_shim():
    """detectron2's DeformConv / ModulatedDeformConv modules (with the shim) vs the naive kernel."""
    g = torch.Generator().manual_seed(1234)
    for modulated in [False, True]:
        for stride, dil in [(1, 1), (2, 2)]:
            cls = D2.ModulatedDeformConv if modulated else D2.DeformConv
            conv = cls(4, 6, kernel_size=3, stride=stride, padding=dil, dilation=dil, groups=2,
                       deformable_groups=2, bias=False)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
            x = torch.randn(2, 4, 7, 9, generator=g)
            Ho = (7 + 2 * dil - 2 * dil - 1) // stride + 1
            Wo = (9 + 2 * dil - 2 * dil - 1) // stride + 1
            offset = torch.randn(2, 2 * 2 * 9, Ho, Wo, generator=g) * 3.0
            mask = torch.rand(2, 2 * 9, Ho, Wo, generator=g) if modulated else None
            with torch.no_grad():
                y = conv(x, offset, mask) if modulated else conv(x, offset)
            ref = _naive_deform_conv(x.double().numpy(), offset.double().numpy(),
                                     None if mask is None else mask.double().numpy(),
                                     conv.weight.detach().double().numpy(), None, stride, dil, dil, 2, 2)
            err = np.abs(y.double().numpy() - ref).max() / np.abs(ref).max()
            assert y.shape == ref.shape and err < 1e-5, (modulated, stride, dil, y.shape, ref.shape, err)
    print("deform shim: torchvision deform_conv2d == detectron2 CUDA kernel semantics (naive float64)")


# --------------------------------------------------------------------------------------------
# Deterministic randomisation
# --------------------------------------------------------------------------------------------
CONV_GAIN = 1.0  # std = gain * sqrt(2 / fan_in) (He init): keeps ReLU activations O(1)
BRANCH_END_GAIN = 0.5  # last conv of each residual branch: keeps the residual sum from growing 2x/block
OFFSET_W_STD = 1.0  # conv2_offset weight std * sqrt(fan_in), before calibrate_offsets_()
OFFSET_B_STD = 0.5  # conv2_offset bias std (pixels)
OFFSET_TARGET = 2.0  # calibrate_offsets_(): std of the weight part of the offsets, in pixels


def randomize_(model, seed):
    """Overwrites every floating-point parameter and buffer of `model`."""
    g = torch.Generator().manual_seed(seed)
    done = set()

    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)
        done.add(t.data_ptr())

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
        done.add(t.data_ptr())

    branch_end = set()
    for m in model.modules():
        if hasattr(m, "conv1") and hasattr(m, "conv2"):
            branch_end.add(id(m.conv3 if hasattr(m, "conv3") else m.conv2))

    conv_types = (nn.Conv2d, D2.DeformConv, D2.ModulatedDeformConv)
    bn_types = (nn.BatchNorm2d, D2.FrozenBatchNorm2d)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, conv_types):
                fan_in = m.weight[0].numel()
                if name.endswith("conv2_offset"):
                    normal(m.weight, OFFSET_W_STD / math.sqrt(fan_in))
                    normal(m.bias, OFFSET_B_STD)
                else:
                    gain = BRANCH_END_GAIN if id(m) in branch_end else CONV_GAIN
                    normal(m.weight, gain * math.sqrt(2.0 / fan_in))
                    if m.bias is not None:
                        normal(m.bias, 0.1)
            elif isinstance(m, bn_types):
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.1)
                normal(m.running_mean, 0.1)
                uniform(m.running_var, 0.5, 1.5)
            elif isinstance(m, (nn.GroupNorm, nn.LayerNorm, D2.LayerNorm)):
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.1)
            elif isinstance(m, nn.Linear):
                normal(m.weight, 1.0 / math.sqrt(m.in_features))
                normal(m.bias, 0.1)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert v.data_ptr() in done, f"{k} was not randomised"


def calibrate_offsets_(model, x):
    """detectron2 zero-inits conv2_offset, which would test nothing; random weights give offsets whose
    size depends on the activations. Scale each conv2_offset weight (in network order, one forward
    each) so the weight part of its output has std ~OFFSET_TARGET px on this input: with the N(0, 0.5)
    bias, mean |offset| is then ~1.7 px."""
    for name, m in model.named_modules():
        if not name.endswith("conv2_offset"):
            continue
        seen = []
        h = m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].pow(2).mean().sqrt().item()))
        run_d2(model, x)
        h.remove()
        with torch.no_grad():
            m.weight.mul_(OFFSET_TARGET / max(seen[0], 1e-3))


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------
IN_A = (1, 3, 48, 64)
IN_B = (2, 3, 33, 45)
IN_TV = (1, 3, 24, 40)

# NARROW: channels 8 (stem), 16/32/64/128 (res2-res5), bottleneck 2/4/8/16 (WIDTH_PER_GROUP 2);
# TINY: 8, 8/16/32/64, bottleneck 1/2/4/8. Keeps all data of all cases near 4 MB.
NARROW = ["MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
          "MODEL.RESNETS.WIDTH_PER_GROUP", "2"]
TINY = ["MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "8",
        "MODEL.RESNETS.WIDTH_PER_GROUP", "1"]
ALL5 = "['stem', 'res2', 'res3', 'res4', 'res5']"
DEFORM_ON = "[False, True, True, True]"

CONFIG_CASES = [
    dict(name="r50_frozenbn_stride1x1", input=IN_A,
         overrides=["MODEL.RESNETS.DEPTH", "50", *NARROW, "MODEL.RESNETS.STRIDE_IN_1X1", "True",
                    "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNETS.OUT_FEATURES", ALL5],
         description="narrow R-50, FrozenBN, stride in the 1x1 conv (MSRA style), all five features"),
    dict(name="r50_bn_stride3x3_batch2", input=IN_B,
         overrides=["MODEL.RESNETS.DEPTH", "50", *NARROW, "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                    "MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.OUT_FEATURES", ALL5],
         description="narrow R-50, BN (FREEZE_AT 2 turns stem and res2 into FrozenBN: their entries have "
                     "no num_batches_tracked), stride in the 3x3 conv, batch 2, odd input size 33x45"),
    dict(name="r50_gn_groups8", input=IN_B,
         overrides=["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "32",
                    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32", "MODEL.RESNETS.NUM_GROUPS", "8",
                    "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.RESNETS.NORM", "GN",
                    "MODEL.RESNETS.OUT_FEATURES", "['stem', 'res2']"],
         description="R-50 with GroupNorm(32 groups) (channels 32/32, bottleneck 32 = 8 groups x 4), "
                     "batch 2, res3-res5 not built"),
    dict(name="r50_ln", input=IN_A,
         overrides=["MODEL.RESNETS.DEPTH", "50", *NARROW, "MODEL.RESNETS.NORM", "LN",
                    "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4']"],
         description="narrow R-50 with detectron2's channel LayerNorm (eps 1e-6), res5 not built"),
    dict(name="x50_2x2_batch2", input=IN_B,
         overrides=["MODEL.RESNETS.DEPTH", "50", *NARROW[:4], "MODEL.RESNETS.NUM_GROUPS", "2",
                    "MODEL.RESNETS.WIDTH_PER_GROUP", "2",
                    "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3']"],
         description="narrow ResNeXt-50 2x2d (grouped 3x3 convs, bottleneck 4/8), FrozenBN, batch 2, 33x45, "
                     "res4/res5 not built"),
    dict(name="r50_res5_dilation2", input=IN_A,
         overrides=["MODEL.RESNETS.DEPTH", "50", *TINY, "MODEL.RESNETS.RES5_DILATION", "2",
                    "MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']"],
         description="tiny R-50 (8/8/16/32/64) with RES5_DILATION 2 (res5 keeps stride 16, dilated 3x3 convs)"),
    dict(name="r50_only_res3", input=IN_B,
         overrides=["MODEL.RESNETS.DEPTH", "50", *TINY, "MODEL.RESNETS.OUT_FEATURES", "['res3']"],
         description="tiny R-50 asking only res3: res4 and res5 are not built (not in the weights)"),
    dict(name="r101_res4", input=IN_A,
         overrides=["MODEL.RESNETS.DEPTH", "101", *TINY,
                    "MODEL.RESNETS.OUT_FEATURES", "['res4']"],
         description="tiny R-101 (23 blocks in res4, channels 8/16/32, bottleneck 1/2/4), only res4"),
    dict(name="dcn_v1_g1", input=IN_A,
         overrides=["MODEL.RESNETS.DEPTH", "50", *NARROW, "MODEL.RESNETS.DEFORM_ON_PER_STAGE", DEFORM_ON,
                    "MODEL.RESNETS.DEFORM_MODULATED", "False", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "1",
                    "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4']"],
         description="narrow R-50, deformable conv v1 in res3-res4 (res5 not built), 1 deformable group"),
    dict(name="dcn_v2_g2_batch2", input=IN_B,
         overrides=["MODEL.RESNETS.DEPTH", "50", *NARROW, "MODEL.RESNETS.DEFORM_ON_PER_STAGE", DEFORM_ON,
                    "MODEL.RESNETS.DEFORM_MODULATED", "True", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "2",
                    "MODEL.RESNETS.OUT_FEATURES", "['res3', 'res4']"],
         description="narrow R-50, modulated deformable conv (v2) in res3-res4 (res5 not built), 2 "
                     "deformable groups, batch 2, 33x45"),
    dict(name="dcn_v1_g2_x50", input=IN_B,
         overrides=["MODEL.RESNETS.DEPTH", "50", *NARROW[:4], "MODEL.RESNETS.NUM_GROUPS", "2",
                    "MODEL.RESNETS.WIDTH_PER_GROUP", "1", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                    "MODEL.RESNETS.DEFORM_ON_PER_STAGE", DEFORM_ON,
                    "MODEL.RESNETS.DEFORM_MODULATED", "False", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "2",
                    "MODEL.RESNETS.OUT_FEATURES", "['res3', 'res4']"],
         description="narrow ResNeXt-50 2x1d with deformable conv v1, 2 deformable groups (grouped "
                     "deformable 3x3), stride in 3x3, batch 2"),
    dict(name="dcn_v2_g1_dilation2", input=IN_A,
         overrides=["MODEL.RESNETS.DEPTH", "50", *TINY, "MODEL.RESNETS.DEFORM_ON_PER_STAGE", DEFORM_ON,
                    "MODEL.RESNETS.DEFORM_MODULATED", "True", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "1",
                    "MODEL.RESNETS.RES5_DILATION", "2", "MODEL.RESNETS.OUT_FEATURES", "['res5']"],
         description="tiny R-50, modulated deformable conv, 1 deformable group, RES5_DILATION 2 "
                     "(dilated deformable 3x3 in res5), only res5"),
]

# Stages cases: the dicts are both the manifest entry and what the Python call is built from.
STAGE_CASES = [
    dict(name="stages_basic_bn", input=IN_B, freeze_at=0, num_classes=None,
         out_features=["stem", "res2", "res3", "res4"],
         stem=dict(in_channels=3, out_channels=8, norm="BN"),
         stages=[dict(block_class="BasicBlock", num_blocks=2, in_channels=8, out_channels=8,
                      stride_per_block=[1, 1], norm="BN"),
                 dict(block_class="BasicBlock", num_blocks=2, in_channels=8, out_channels=12,
                      stride_per_block=[2, 1], norm="BN"),
                 dict(block_class="BasicBlock", num_blocks=2, in_channels=12, out_channels=16,
                      stride_per_block=[2, 1], norm="BN")],
         description="R-18-like BasicBlock net, narrow (8/8/12/16), BN, freeze_at 0, shortcut convs in "
                     "res3/res4 (none in res2), batch 2, 33x45"),
    dict(name="stages_classifier", input=IN_A, freeze_at=2, num_classes=10,
         out_features=["res3", "linear"],
         stem=dict(in_channels=3, out_channels=8, norm="FrozenBN"),
         stages=[dict(block_class="BottleneckBlock", num_blocks=2, in_channels=8, out_channels=16,
                      stride_per_block=[1, 1], bottleneck_channels=4, num_groups=1, norm="FrozenBN",
                      stride_in_1x1=True, dilation=1),
                 dict(block_class="BottleneckBlock", num_blocks=2, in_channels=16, out_channels=32,
                      stride_per_block=[2, 1], bottleneck_channels=8, num_groups=1, norm="FrozenBN",
                      stride_in_1x1=True, dilation=1),
                 dict(block_class="BottleneckBlock", num_blocks=2, in_channels=32, out_channels=64,
                      stride_per_block=[2, 1], bottleneck_channels=16, num_groups=1, norm="FrozenBN",
                      stride_in_1x1=True, dilation=1)],
         description="Bottleneck net with num_classes=10 and out_features [res3, linear]: res4 is "
                     "dropped, linear (10 x 32) follows global average pooling of res3"),
    dict(name="stages_per_block", input=IN_A, freeze_at=0, num_classes=None,
         out_features=["res2", "res3"],
         stem=dict(in_channels=3, out_channels=8, norm="FrozenBN"),
         stages=[dict(block_class="BottleneckBlock", num_blocks=3, in_channels=8, out_channels=16,
                      stride_per_block=[2, 1, 1], dilation_per_block=[1, 2, 1], bottleneck_channels=4,
                      num_groups=2, norm="FrozenBN", stride_in_1x1=False),
                 dict(block_class="BottleneckBlock", num_blocks=2, in_channels=16, out_channels=32,
                      stride_per_block=[2, 1], dilation_per_block=[2, 1], bottleneck_channels=8,
                      num_groups=1, norm="BN", stride_in_1x1=True)],
         description="make_stage with stride_per_block/dilation_per_block: res2 [stride 2,1,1; dilation "
                     "1,2,1] (res2 stride 8), res3 [stride 2,1; dilation 2,1], grouped 3x3 in res2, "
                     "FrozenBN then BN"),
    dict(name="stages_deform_mixed", input=IN_B, freeze_at=1, num_classes=None,
         out_features=["res2", "res3"],
         stem=dict(in_channels=3, out_channels=8, norm="FrozenBN"),
         stages=[dict(block_class="BottleneckBlock", num_blocks=1, in_channels=8, out_channels=16,
                      stride_per_block=[1], bottleneck_channels=8, num_groups=1, norm="FrozenBN",
                      stride_in_1x1=False, dilation=1),
                 dict(block_class="DeformBottleneckBlock", num_blocks=2, in_channels=16, out_channels=32,
                      stride_per_block=[2, 1], dilation_per_block=[1, 2], bottleneck_channels=8,
                      num_groups=2, norm="FrozenBN", stride_in_1x1=True, deform_modulated=True,
                      deform_num_groups=2)],
         description="BottleneckBlock stage then a DeformBottleneckBlock stage (modulated, 2 groups, 2 "
                     "deformable groups, stride in 1x1, dilation_per_block [1, 2]), batch 2"),
]

TV_CASES = [
    dict(name="tv_r50_w4", block="Bottleneck", layers=[3, 4, 6, 3], groups=1, width_per_group=4,
         keep=["conv1.", "bn1.", "layer1.", "layer2."], refs={"layer1": "res2", "layer2": "res3"},
         overrides=["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "64",
                    "MODEL.RESNETS.RES2_OUT_CHANNELS", "256", "MODEL.RESNETS.NUM_GROUPS", "1",
                    "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                    "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3']"],
         description="torchvision ResNet(Bottleneck, [3,4,6,3], width_per_group=4) with torchvision "
                     "names, truncated to conv1/bn1/layer1/layer2; references = layer1/layer2 outputs"),
    dict(name="tv_x50_2x4", block="Bottleneck", layers=[3, 4, 6, 3], groups=2, width_per_group=4,
         keep=["conv1.", "bn1.", "layer1."], refs={"layer1": "res2"},
         overrides=["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "64",
                    "MODEL.RESNETS.RES2_OUT_CHANNELS", "256", "MODEL.RESNETS.NUM_GROUPS", "2",
                    "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                    "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNETS.OUT_FEATURES", "['res2']"],
         description="torchvision ResNeXt ResNet(Bottleneck, [3,4,6,3], groups=2, width_per_group=4), "
                     "torchvision names, truncated to conv1/bn1/layer1 (size); reference = layer1"),
    dict(name="tv_r18", block="BasicBlock", layers=[2, 2, 2, 2], groups=1, width_per_group=64,
         keep=["conv1.", "bn1.", "layer1."], refs={"layer1": "res2"},
         overrides=["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.STEM_OUT_CHANNELS", "64",
                    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                    "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNETS.OUT_FEATURES", "['res2']"],
         description="torchvision ResNet(BasicBlock, [2,2,2,2]) (resnet18 layout), torchvision names, "
                     "truncated to conv1/bn1/layer1 (layer2 alone would be 2 MB); reference = layer1"),
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def seed_of(name):
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 100003


def make_input(name, shape):
    g = torch.Generator().manual_seed(seed_of(name) + 7)
    return torch.randn(shape, generator=g, dtype=torch.float32)


def cfg_from_overrides(overrides):
    cfg = D2.get_cfg()
    cfg.merge_from_list(list(overrides))
    return cfg


def write_config_yaml(path, cfg, overrides, name):
    tree = {}
    for key in overrides[0::2]:
        node = cfg
        for part in key.split("."):
            node = node[part]
        d = tree
        parts = key.split(".")
        for part in parts[:-1]:
            d = d.setdefault(part, {})
        d[parts[-1]] = list(node) if isinstance(node, (list, tuple)) else node
    tree["VERSION"] = 2
    with open(path, "w") as f:
        f.write(f"# {name}: detectron2 overrides (tests/data/make_goldens.py); load with get_cfg() +\n"
                f"# merge_from_file. Everything not listed is a detectron2 default.\n")
        yaml.safe_dump(tree, f, default_flow_style=None, sort_keys=True)
    cfg2 = D2.get_cfg()
    cfg2.merge_from_file(path)
    assert cfg2 == cfg, f"{path} does not load back to the same config"


def save_array(path, t):
    a = t.detach().cpu().contiguous().numpy().astype(np.float32)
    np.save(path, a)


def check_shapes(model, x, outputs, case_name):
    """output_shape() vs arrays: channels, and H_out == ceil(H_in / stride)."""
    try:
        shapes = {k: (v.channels, v.stride) for k, v in model.output_shape().items()}
        error = None
    except KeyError as e:  # detectron2 has no ShapeSpec for "linear"
        error = f"KeyError: {e}"
        shapes = {k: (model._out_feature_channels[k], model._out_feature_strides[k])
                  for k in model._out_features if k != "linear"}
    for k, (c, s) in shapes.items():
        y = outputs[k]
        assert y.shape[0] == x.shape[0] and y.shape[1] == c, (case_name, k, y.shape, c)
        assert y.shape[2] == -(-x.shape[2] // s) and y.shape[3] == -(-x.shape[3] // s), \
            (case_name, k, tuple(y.shape), tuple(x.shape), s)
    return {k: {"channels": c, "stride": s} for k, (c, s) in shapes.items()}, error


class OffsetProbe:
    def __init__(self, model):
        self.stats = []
        self.handles = []
        for name, m in model.named_modules():
            if name.endswith("conv2_offset"):
                parent = model.get_submodule(name.rsplit(".", 1)[0])
                self.handles.append(m.register_forward_hook(self._hook(name, parent.deform_modulated)))

    def remove(self):
        for h in self.handles:
            h.remove()

    def _hook(self, name, modulated):
        def hook(mod, inp, out):
            n_off = 2 * out.shape[1] // 3 if modulated else out.shape[1]
            self.stats.append((name, out[:, :n_off].abs().mean().item(), out[:, :n_off].abs().max().item()))
        return hook


def run_d2(model, x):
    model.eval()
    with torch.no_grad():
        return model(x.clone())


def float64_error(model, x, outputs, tol, name, forward=None):
    """The float32 references vs the same model in float64: max|f32 - f64| / max|f64| per feature.
    Must stay well below the tolerance the C++ test uses, or the references would be too noisy."""
    m64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        ref = forward(m64, x.double()) if forward else m64(x.double())
    errs = {k: (outputs[k].double() - ref[k]).abs().max().item() / ref[k].abs().max().item() for k in outputs}
    for k, e in errs.items():
        assert e < tol / 10, (name, k, e, tol)
    return {k: float(f"{e:.3g}") for k, e in errs.items()}


def dir_size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def finish_case(out_root, name, model_kind, x, outputs, state_dict, extra):
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    torch.save(state_dict, os.path.join(d, "weights.pth"))
    save_array(os.path.join(d, "input.npy"), x)
    entry = {"name": name, "model": model_kind}
    entry.update(extra)
    entry["weights"] = f"{name}/weights.pth"
    entry["input"] = f"{name}/input.npy"
    entry["input_shape"] = list(x.shape)
    entry["outputs"] = {}
    for k, y in outputs.items():
        save_array(os.path.join(d, f"{k}.npy"), y)
        entry["outputs"][k] = f"{name}/{k}.npy"
    entry["output_max_abs"] = {k: float(y.abs().max()) for k, y in outputs.items()}
    return entry


def check_roundtrip(out_root, entry, build):
    """What the C++ test will do: rebuild the model from the written description (config.yaml, or the
    manifest's stage list after a JSON round trip), load weights.pth strictly, rerun, compare."""
    model = build()
    sd = torch.load(os.path.join(out_root, entry["weights"]))
    model.load_state_dict(sd, strict=True)
    x = torch.from_numpy(np.load(os.path.join(out_root, entry["input"])))
    out = run_d2(model, x)
    assert list(out) == list(entry["outputs"]), (entry["name"], list(out))
    for k, path in entry["outputs"].items():
        ref = np.load(os.path.join(out_root, path))
        assert ref.dtype == np.float32 and ref.shape == tuple(out[k].shape), (entry["name"], k)
        assert np.abs(out[k].numpy() - ref).max() <= 1e-6 * np.abs(ref).max(), (entry["name"], k)


# --------------------------------------------------------------------------------------------
# Case builders
# --------------------------------------------------------------------------------------------
def config_case(out_root, spec):
    name = spec["name"]
    cfg = cfg_from_overrides(spec["overrides"])
    model = D2.resnet.build_resnet_backbone(cfg, D2.ShapeSpec(channels=3))
    randomize_(model, seed_of(name))
    x = make_input(name, spec["input"])
    calibrate_offsets_(model, x)
    probe = OffsetProbe(model)
    outputs = run_d2(model, x)
    probe.remove()
    assert list(outputs) == list(cfg.MODEL.RESNETS.OUT_FEATURES), (list(outputs), cfg.MODEL.RESNETS.OUT_FEATURES)
    output_shape, err = check_shapes(model, x, outputs, name)
    assert err is None, err
    deformable = any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE[: len(model.stage_names)])
    if deformable:
        assert probe.stats, name
        for n, mean_abs, _ in probe.stats:
            assert mean_abs > 0.5, (name, n, mean_abs)
        print(f"  {name}: mean |offset| per deformable conv (px): "
              + ", ".join(f"{n.split('.conv2_offset')[0]}={m:.2f}" for n, m, _ in probe.stats))
    os.makedirs(os.path.join(out_root, name), exist_ok=True)
    write_config_yaml(os.path.join(out_root, name, "config.yaml"), cfg, spec["overrides"], name)
    extra = {"config": f"{name}/config.yaml", "overrides": spec["overrides"], "weights_names": "detectron2"}
    entry = finish_case(out_root, name, "config", x, outputs, model.state_dict(), extra)
    tol = 2e-3 if deformable else 1e-4
    entry.update({"output_shape": output_shape, "stage_names": list(model.stage_names),
                  "deformable": bool(deformable), "tolerance": tol, "description": spec["description"],
                  "float32_vs_float64": float64_error(model, x, outputs, tol, name)})
    if deformable:
        entry["mean_abs_offset"] = {n: round(m, 4) for n, m, _ in probe.stats}

    def rebuild():
        c = D2.get_cfg()
        c.merge_from_file(os.path.join(out_root, entry["config"]))
        return D2.resnet.build_resnet_backbone(c, D2.ShapeSpec(channels=3))

    check_roundtrip(out_root, entry, rebuild)
    return entry


def build_stages_model(spec):
    R = D2.resnet
    stem = R.BasicStem(**spec["stem"])
    stages = []
    for st in spec["stages"]:
        kw = {k: v for k, v in st.items() if k not in ("block_class", "num_blocks", "in_channels", "out_channels")}
        stages.append(R.ResNet.make_stage(getattr(R, st["block_class"]), st["num_blocks"],
                                          in_channels=st["in_channels"], out_channels=st["out_channels"], **kw))
    return R.ResNet(stem, stages, num_classes=spec["num_classes"], out_features=spec["out_features"],
                    freeze_at=spec["freeze_at"])


def stages_case(out_root, spec):
    name = spec["name"]
    model = build_stages_model(spec)
    randomize_(model, seed_of(name))
    x = make_input(name, spec["input"])
    calibrate_offsets_(model, x)
    probe = OffsetProbe(model)
    outputs = run_d2(model, x)
    probe.remove()
    assert list(outputs) == spec["out_features"], (list(outputs), spec["out_features"])
    output_shape, err = check_shapes(model, x, outputs, name)
    if "linear" in outputs:
        assert outputs["linear"].shape == (x.shape[0], spec["num_classes"]), outputs["linear"].shape
    deformable = any(st["block_class"] == "DeformBottleneckBlock"
                     for st in spec["stages"][: len(model.stage_names)])
    if deformable:
        assert probe.stats
        for n, mean_abs, _ in probe.stats:
            assert mean_abs > 0.5, (name, n, mean_abs)
        print(f"  {name}: mean |offset| (px): " + ", ".join(f"{n}={m:.2f}" for n, m, _ in probe.stats))
    extra = {k: spec[k] for k in ("stem", "stages", "num_classes", "out_features", "freeze_at")}
    extra["weights_names"] = "detectron2"
    entry = finish_case(out_root, name, "stages", x, outputs, model.state_dict(), extra)
    tol = 2e-3 if deformable else 1e-4
    entry.update({"output_shape": output_shape, "stage_names": list(model.stage_names),
                  "deformable": bool(deformable), "tolerance": tol, "description": spec["description"],
                  "float32_vs_float64": float64_error(model, x, outputs, tol, name)})
    if err:
        entry["output_shape_note"] = (f"detectron2's output_shape() raises {err} for this model (no ShapeSpec "
                                      f"for 'linear'); output_shape lists the res*/stem features only")
    if deformable:
        entry["mean_abs_offset"] = {n: round(m, 4) for n, m, _ in probe.stats}
    check_roundtrip(out_root, entry, lambda: build_stages_model(json.loads(json.dumps(entry))))
    return entry


def tv_case(out_root, spec, tmp):
    from torchvision.models import resnet as tvr

    name = spec["name"]
    block = getattr(tvr, spec["block"])
    model = tvr.ResNet(block, spec["layers"], groups=spec["groups"], width_per_group=spec["width_per_group"])
    randomize_(model, seed_of(name))
    model.eval()
    x = make_input(name, spec["input"] if "input" in spec else IN_TV)
    feats = {}
    handles = [getattr(model, layer).register_forward_hook(
        lambda m, i, o, feat=feat: feats.__setitem__(feat, o.clone())) for layer, feat in spec["refs"].items()]
    with torch.no_grad():
        model(x.clone())
    for h in handles:
        h.remove()
    sd = {k: v for k, v in model.state_dict().items() if any(k.startswith(p) for p in spec["keep"])}
    sd = type(model.state_dict())(sd)
    assert len(sd) < len(model.state_dict())

    # Cross-check: detectron2's own torchvision converter + the config model give the same features.
    tv_path = os.path.join(tmp, f"{name}.pth")
    pkl_path = os.path.join(tmp, f"{name}.pkl")
    torch.save(sd, tv_path)
    subprocess.run([sys.executable, os.path.join(D2.root, "tools", "convert-torchvision-to-d2.py"), tv_path,
                    pkl_path], check=True, stdout=subprocess.DEVNULL)
    import pickle

    with open(pkl_path, "rb") as f:
        conv = pickle.load(f)["model"]
    cfg = cfg_from_overrides(spec["overrides"])
    d2model = D2.resnet.build_resnet_backbone(cfg, D2.ShapeSpec(channels=3))
    conv = {k: torch.from_numpy(v) for k, v in conv.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = d2model.load_state_dict(conv, strict=False)
    assert not missing and not unexpected, (name, missing, unexpected)
    d2out = run_d2(d2model, x)
    for k in feats:
        diff = (d2out[k] - feats[k]).abs().max().item() / feats[k].abs().max().item()
        assert diff < 1e-5, (name, k, diff)
    output_shape, err = check_shapes(d2model, x, feats, name)
    assert err is None
    print(f"  {name}: detectron2 (convert-torchvision-to-d2.py + config) == torchvision hooks")

    os.makedirs(os.path.join(out_root, name), exist_ok=True)
    write_config_yaml(os.path.join(out_root, name, "config.yaml"), cfg, spec["overrides"], name)
    extra = {"config": f"{name}/config.yaml", "overrides": spec["overrides"], "weights_names": "torchvision"}
    entry = finish_case(out_root, name, "config", x, feats, sd, extra)
    def tv_forward(m, inp):
        got = {}
        hooks = [getattr(m, layer).register_forward_hook(
            lambda mod, i, o, feat=feat: got.__setitem__(feat, o)) for layer, feat in spec["refs"].items()]
        m(inp)
        for h in hooks:
            h.remove()
        return got

    entry.update({"output_shape": output_shape, "stage_names": list(d2model.stage_names), "deformable": False,
                  "tolerance": 1e-4, "description": spec["description"],
                  "float32_vs_float64": float64_error(model, x, feats, 1e-4, name, tv_forward),
                  "torchvision_model": f"torchvision.models.resnet.ResNet({spec['block']}, {spec['layers']}, "
                                       f"groups={spec['groups']}, width_per_group={spec['width_per_group']})",
                  "torchvision_outputs": {v: k for k, v in spec["refs"].items()}})
    return entry


def d2_commit(d2_root):
    """The checkout's commit; for a plain copy, the mirror's HEAD if the files used are identical."""
    used = ["detectron2/modeling/backbone/resnet.py", "detectron2/layers/deform_conv.py",
            "detectron2/layers/batch_norm.py", "detectron2/layers/wrappers.py", "detectron2/config/defaults.py",
            "detectron2/config/config.py", "tools/convert-torchvision-to-d2.py"]
    for repo in [d2_root, "/work/.mirror/facebookresearch+detectron2/repo"]:
        try:
            commit = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%H"], check=True,
                                    capture_output=True, text=True).stdout.strip()
            for f in used:
                blob = subprocess.run(["git", "-C", repo, "show", f"HEAD:{f}"], check=True, capture_output=True).stdout
                with open(os.path.join(d2_root, f), "rb") as fh:
                    if fh.read() != blob:
                        raise ValueError(f)
            return commit, repo
        except (subprocess.CalledProcessError, FileNotFoundError, ValueError):
            continue
    return "unknown", None


def write_readme(out_root, entries, args, commit, commit_src, total):
    lines = [
        "# ResNet golden references",
        "",
        "Made by `tests/data/make_goldens.py` with detectron2's own modules "
        "(`detectron2/modeling/backbone/resnet.py`, `detectron2/layers`, `detectron2/config`) and torchvision:",
        "",
        "```",
        "/work/venv-d2/bin/python tests/data/make_goldens.py --detectron2 /work/d2 --out tests/data/resnet",
        "```",
        "",
        f"- detectron2 commit: `{commit}`" + (f" (HEAD of `{commit_src}`, whose files used here are identical to the checkout)" if commit_src else ""),
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {np.__version__}, CPU, float32",
        "- shims (in the script): `detectron2._C` stubbed and its deformable-conv kernels replaced by "
        "`torchvision.ops.deform_conv2d` (checked against a float64 transcription of detectron2's CUDA im2col "
        "kernel); `cloudpickle` stubbed; `detectron2.modeling` / `detectron2.modeling.backbone` package "
        "`__init__`s skipped (they import the whole model zoo).",
        "- every parameter and buffer is random (seeded): conv weights N(0, 2/fan_in) (x0.5 on the last conv "
        "of each residual branch), BN/FrozenBN weight U(0.5,1.5), bias N(0,0.1), running_mean N(0,0.1), "
        "running_var U(0.5,1.5); GN/LN weight U(0.5,1.5), bias N(0,0.1); conv2_offset weight "
        "N(0, 1/fan_in) then scaled per layer so that part of the offsets has std 2 px on the case's input, "
        "bias N(0,0.5) (detectron2 zero-inits them); linear N(0, 1/in), bias N(0,0.1).",
        "- each case: `weights.pth` (torch.save of the state_dict: detectron2 names, torchvision names for "
        "tv_*), `input.npy` (float32 NCHW), `<feature>.npy`, `config.yaml` (config cases: only the overrides, "
        "loads with detectron2's get_cfg().merge_from_file). `manifest.json` lists everything; a test passes "
        "a feature when max|out - ref| <= tolerance * max|ref| (1e-4, 2e-3 with deformable conv).",
        "- manifest: `model` is `config` (config.yaml + overrides; `weights_names` says detectron2 or torchvision "
        "names) or `stages` (stem = BasicStem kwargs; each stage's keys other than block_class/num_blocks/"
        "in_channels/out_channels are exactly the keyword arguments given to ResNet.make_stage, so BasicBlock "
        "stages carry only stride_per_block and norm). `output_shape` is detectron2's output_shape(); "
        "`float32_vs_float64` is the references' own rounding error; `mean_abs_offset` the deformable offsets.",
        "- not built: SyncBN (nn.SyncBatchNorm refuses CPU input even in eval), R-18/R-34 through the config "
        "with narrow channels (detectron2 asserts RES2_OUT_CHANNELS == 64 for them: covered by tv_r18 and "
        "stages_basic_bn).",
        "- checks in the script: the written config.yaml (or the manifest's stage list) + weights.pth rebuild "
        "the same outputs in detectron2; float32 references within 1/10 of the tolerance of a float64 run; "
        "output_shape() channels == arrays, H,W == ceil(input / stride), the YAML "
        "loads back to the same config, deformable offsets mean |offset| > 0.5 px, and for tv_* detectron2's "
        "tools/convert-torchvision-to-d2.py + the config model reproduce the torchvision features.",
        f"- total size: {total / 1e6:.2f} MB",
        "",
        "| case | model | input | outputs | tol | description |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(f"| {e['name']} | {e['model']} ({e['weights_names']} names) | "
                     f"{'x'.join(map(str, e['input_shape']))} | {', '.join(e['outputs'])} | {e['tolerance']:g} | "
                     f"{e['description']} |")
    lines.append("")
    with open(os.path.join(out_root, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectron2", required=True, help="detectron2 checkout (holds detectron2/ and tools/)")
    ap.add_argument("--out", required=True, help="output folder, e.g. tests/data/resnet (replaced)")
    args = ap.parse_args()

    torch.set_num_threads(1)  # reproducible summation order
    install_shims(args.detectron2)
    check_deform_shim()

    out_root = args.out
    if os.path.isdir(out_root) and os.listdir(out_root):
        if not os.path.isfile(os.path.join(out_root, "manifest.json")):
            sys.exit(f"--out {out_root} is not empty and holds no manifest.json: not replacing it")
        shutil.rmtree(out_root)
    os.makedirs(out_root)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in CONFIG_CASES:
            entries.append(config_case(out_root, spec))
        for spec in STAGE_CASES:
            entries.append(stages_case(out_root, spec))
        for spec in TV_CASES:
            entries.append(tv_case(out_root, spec, tmp))
    for e in entries:
        print(f"{e['name']:26s} {dir_size(os.path.join(out_root, e['name'])) / 1e3:8.1f} kB  "
              f"max|out| " + " ".join(f"{k}={v:.3g}" for k, v in e["output_max_abs"].items())
              + "  f32-vs-f64 " + " ".join(f"{v:.1e}" for v in e["float32_vs_float64"].values()))
    commit, commit_src = d2_commit(args.detectron2)
    manifest = {"generator": "tests/data/make_goldens.py", "detectron2_commit": commit,
                "torch": torch.__version__, "torchvision": torchvision.__version__, "cases": entries}
    with open(os.path.join(out_root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = dir_size(out_root)
    write_readme(out_root, entries, args, commit, commit_src, total)
    total = dir_size(out_root)
    print(f"{len(entries)} cases, {total / 1e6:.2f} MB in {out_root}")


if __name__ == "__main__":
    main()
