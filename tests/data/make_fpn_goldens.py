#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden references for the FPN backbones, made with detectron2's OWN fpn.py.

Run (from the repository root):

    <venv with detectron2's deps>/bin/python tests/data/make_fpn_goldens.py --detectron2 <detectron2 checkout> --out tests/data/fpn

--detectron2 is a detectron2 checkout. Nothing of it is copied into this repository: the script
imports detectron2/modeling/backbone/fpn.py (build_resnet_fpn_backbone,
build_retinanet_resnet_fpn_backbone), resnet.py, detectron2/layers, detectron2/config,
detectron2/data/transforms (ResizeShortestEdge), detectron2/structures (ImageList) and
detectron2/checkpoint/c2_model_loading.py from there, with the shims of make_goldens.py
(install_shims: detectron2._C stubbed, deformable kernels by torchvision, the model-zoo package
__init__s skipped). Runs on CPU in float32 in a few seconds; deterministic (seeded generators).

Each case is built from a config (config.yaml: only the overrides, loads with get_cfg() +
merge_from_file) by detectron2's builder, every parameter and buffer randomised (make_goldens'
randomize_: norm statistics and biases included, so that a wrong norm or a missing bias shows),
and saved under one of the weight namings a checkpoint of an FPN model comes with:
  d2_model_pth        torch.save({"model": {"backbone.bottom_up.*", "backbone.fpn_*", "backbone.top_block.*",
                      plus detector entries (proposal_generator, pixel_mean) that a backbone skips}})
  fpn_state_dict_pth  torch.save(fpn.state_dict()) in the legacy (pre-1.6) format: "bottom_up.*", "fpn_*", "top_block.*"
  safetensors         the d2 model names ("backbone.*") in a .safetensors file (written by hand: 8-byte
                      little-endian header length, JSON header, raw little-endian data)
  c2_pkl              a Detectron1/Caffe2 pickle {"blobs": {...}} with C2 names ("res2_0_branch2a_w",
                      "res_conv1_bn_s", "fpn_inner_res5_2_sum_w", "fpn_inner_res4_5_sum_lateral_gn_s",
                      "fpn_res4_5_sum_w"), made by inverting convert_c2_detectron_names and checked by
                      running detectron2's converter on them
  c2_imagenet_pkl     a C2 ImageNet pickle with the ResNet's entries only (the FPN is missing): the
                      references are the bottom-up's res4/res5 (what a loader can be compared on)
SyncBN: nn.SyncBatchNorm refuses CPU input even in eval, where it computes exactly what BatchNorm2d
computes from its running statistics; the references run a copy whose SyncBatchNorm modules are
replaced by BatchNorm2d holding the same tensors (same state_dict names).
"""

import argparse
import collections
import copy
import importlib
import importlib.util
import json
import os
import pickle
import re
import shutil
import struct
import sys
import types

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402

D2 = types.SimpleNamespace()


def install(d2_root):
    mg.install_shims(d2_root)
    D2.fpn = importlib.import_module("detectron2.modeling.backbone.fpn")
    spec = importlib.util.spec_from_file_location(
        "d2_c2_model_loading", os.path.join(mg.D2.root, "detectron2", "checkpoint", "c2_model_loading.py"))
    D2.c2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(D2.c2)
    import make_preprocess

    D2.T, D2.ImageList = make_preprocess.import_detectron2(mg.D2.root)


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------
# TINY R-50: channels 4 (stem), 4/8/16/32 (res2-res5), bottleneck 1/2/4/8 (keeps the data small).
TINY = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "4",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "4", "MODEL.RESNETS.WIDTH_PER_GROUP", "1"]
R2_5 = "['res2', 'res3', 'res4', 'res5']"
R3_5 = "['res3', 'res4', 'res5']"
R4_5 = "['res4', 'res5']"
FPN_NAME = ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"]
RETINA_NAME = ["MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_backbone"]


def fpn(in_features, out_channels=16, norm="", fuse="sum"):
    return ["MODEL.RESNETS.OUT_FEATURES", in_features, "MODEL.FPN.IN_FEATURES", in_features,
            "MODEL.FPN.OUT_CHANNELS", str(out_channels), "MODEL.FPN.NORM", norm, "MODEL.FPN.FUSE_TYPE", fuse]


CASES = [
    dict(name="fpn_r50_sum", input=(1, 3, 32, 64), weights="d2_model_pth",
         overrides=[*FPN_NAME, *TINY, *fpn(R2_5, out_channels=12)],
         description="build_resnet_fpn_backbone on a tiny R-50 (FrozenBN), res2-res5 -> p2-p6, no norm "
                     "(convs with bias), sum; detectron2 model .pth (backbone.* names, detector entries skipped)"),
    dict(name="fpn_bn_avg_batch2", input=(2, 3, 32, 32), weights="fpn_state_dict_pth",
         overrides=[*FPN_NAME, *TINY, "MODEL.RESNETS.NORM", "BN", *fpn(R2_5, out_channels=8, norm="BN", fuse="avg")],
         description="FPN.NORM BN (bottom-up BN, FREEZE_AT 2), FUSE_TYPE avg, batch 2; the FPN module's own "
                     "state dict (bottom_up.*, fpn_*)"),
    dict(name="fpn_syncbn", input=(1, 3, 32, 64), weights="d2_model_pth", shared_storage=True,
         overrides=[*FPN_NAME, *TINY, "MODEL.RESNETS.NORM", "SyncBN", *fpn(R2_5, out_channels=8, norm="SyncBN")],
         description="FPN.NORM SyncBN and a SyncBN bottom-up (eval: BatchNorm from running statistics)"),
    dict(name="fpn_frozenbn_res3", input=(1, 3, 64, 32), weights="safetensors",
         overrides=[*FPN_NAME, *TINY, *fpn(R3_5, out_channels=8, norm="FrozenBN")],
         description="FPN.NORM FrozenBN, IN_FEATURES res3-res5 -> p3-p6; .safetensors with backbone.* names"),
    dict(name="fpn_gn_c2", input=(1, 3, 32, 64), weights="c2_pkl",
         overrides=[*FPN_NAME, *TINY, *fpn(R2_5, out_channels=32, norm="GN")],
         description="FPN.NORM GN (32 groups, 32 channels), FrozenBN bottom-up with random statistics; "
                     "Caffe2/Detectron1 .pkl names (fpn_inner_res5_2_sum_w, fpn_inner_res4_5_sum_lateral_gn_s, "
                     "fpn_res4_5_sum_w, res_conv1_bn_rm ...)"),
    dict(name="fpn_ln_res4_avg", input=(1, 3, 32, 64), weights="fpn_state_dict_pth",
         overrides=[*FPN_NAME, *TINY, *fpn(R4_5, out_channels=8, norm="LN", fuse="avg")],
         description="FPN.NORM LN (detectron2's channel LayerNorm), IN_FEATURES res4-res5 -> p4-p6, avg"),
    dict(name="retinanet_r50", input=(1, 3, 32, 64), weights="d2_model_pth", shared_storage=True,
         overrides=[*RETINA_NAME, *TINY, *fpn(R3_5, out_channels=8)],
         description="build_retinanet_resnet_fpn_backbone: res3-res5 -> p3-p7 (LastLevelP6P7 on res5), no norm; "
                     "model .pth whose tensors are views of one storage"),
    dict(name="retinanet_res4_bn", input=(1, 3, 32, 64), weights="safetensors",
         overrides=[*RETINA_NAME, *TINY, *fpn(R4_5, out_channels=8, norm="BN", fuse="avg")],
         description="RetinaNet FPN on res4-res5 -> p4-p7, BN (laterals and outputs without bias, p6/p7 with), "
                     "avg; .safetensors"),
    dict(name="fpn_deform_v2", input=(1, 3, 32, 64), weights="d2_model_pth", shared_storage=True,
         overrides=[*FPN_NAME, *TINY, "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]",
                    "MODEL.RESNETS.DEFORM_MODULATED", "True", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "1",
                    *fpn(R2_5, out_channels=8)],
         description="deformable bottom-up: modulated deformable conv in res3-res5, 1 deformable group"),
    dict(name="fpn_x50_odd_17x29", input=(1, 3, 17, 29), weights="d2_model_pth", shared_storage=True,
         overrides=[*FPN_NAME, "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
                    "MODEL.RESNETS.RES2_OUT_CHANNELS", "8", "MODEL.RESNETS.NUM_GROUPS", "2",
                    "MODEL.RESNETS.WIDTH_PER_GROUP", "1", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                    *fpn(R2_5, out_channels=8, fuse="avg")],
         description="ResNeXt-50 2x1d (grouped 3x3, stride in 3x3), odd 17x29 input zero-padded "
                     "to 32x32 as ImageList.from_tensors pads it (input.npy padded, input_unpadded.npy not)"),
    dict(name="fpn_image", input=None, image=(45, 61), weights="d2_model_pth", shared_storage=True,
         overrides=[*FPN_NAME, *TINY, *fpn(R2_5, out_channels=8), "INPUT.MIN_SIZE_TEST", "24", "INPUT.MAX_SIZE_TEST", "40"],
         description="a 45x61 BGR uint8 image (image.npy, HWC) through detectron2's test-time path: "
                     "ResizeShortestEdge(24, 40) -> 24x33 (PIL bilinear, shrinking), (x - PIXEL_MEAN) / "
                     "PIXEL_STD, ImageList.from_tensors pads to 32x64 (size_divisibility 32)"),
    dict(name="fpn_imagenet_c2", input=(1, 3, 32, 64), weights="c2_imagenet_pkl",
         overrides=[*FPN_NAME, *TINY, *fpn(R2_5, out_channels=8)],
         description="a C2 ImageNet .pkl (ResNet entries only, AffineChannel: _bn_s/_bn_b) with an FPN config: "
                     "the FPN's layers are missing (seeded by the loader); references: the bottom-up's res4, res5"),
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def syncbn_as_bn(model):
    """A module tree whose nn.SyncBatchNorm are BatchNorm2d sharing the same tensors (CPU eval)."""
    for name, m in list(model.named_modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, nn.SyncBatchNorm):
                bn = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum,
                                    affine=child.affine, track_running_stats=child.track_running_stats)
                bn.weight, bn.bias = child.weight, child.bias
                bn.running_mean, bn.running_var = child.running_mean, child.running_var
                bn.num_batches_tracked = child.num_batches_tracked
                setattr(m, cname, bn)
    return model


def build(cfg):
    builder = getattr(D2.fpn, cfg.MODEL.BACKBONE.NAME)
    return builder(cfg, mg.D2.ShapeSpec(channels=3))


def run(model, x):
    model.eval()
    with torch.no_grad():
        return model(x.clone())


def d2_to_c2(name, blocks_per_stage, last_stage, norm):
    """The Caffe2/Detectron1 blob name that detectron2's convert_c2_detectron_names maps to `name`
    (a name of the FPN module without the "bottom_up." prefix)."""
    suffix = {"weight": "w", "bias": "b"}
    norm_suffix = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    m = re.fullmatch(r"fpn_(lateral|output)(\d)\.(norm\.)?(weight|bias)", name)
    if m:
        kind, stage, is_norm, what = m.groups()
        stage = int(stage)
        blob = f"res{stage}_{blocks_per_stage[stage] - 1}_sum"
        if kind == "lateral":
            base = f"fpn_inner_{blob}" + ("" if stage == last_stage else "_lateral")
        else:
            base = f"fpn_{blob}"
        assert not is_norm or norm == "GN", (name, norm)  # Detectron1's FPN norm: GroupNorm only
        return f"{base}_gn_{norm_suffix[what]}" if is_norm else f"{base}_{suffix[what]}"
    m = re.fullmatch(r"stem\.conv1\.(norm\.)?(\w+)", name)
    if m:
        return f"res_conv1_bn_{norm_suffix[m.group(2)]}" if m.group(1) else f"conv1_{suffix[m.group(2)]}"
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)\.(norm\.)?(\w+)", name)
    assert m, name
    stage, block, conv, is_norm, what = m.groups()
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[conv]
    base = f"res{stage}_{block}_{branch}"
    return f"{base}_bn_{norm_suffix[what]}" if is_norm else f"{base}_{suffix[what]}"


def c2_blobs(state_dict, cfg, resnet_only):
    """{C2 name: numpy array} for the FPN module's state dict, checked with detectron2's converter."""
    blocks = {2: None, 3: None, 4: None, 5: None}
    for k in state_dict:
        m = re.match(r"bottom_up\.res(\d)\.(\d+)\.", k)
        if m:
            blocks[int(m.group(1))] = max(blocks[int(m.group(1))] or 0, int(m.group(2)) + 1)
    last_stage = int(cfg.MODEL.FPN.IN_FEATURES[-1][3:])
    blobs = collections.OrderedDict()
    expected = {}
    for k, v in state_dict.items():
        if k.endswith("num_batches_tracked"):
            continue
        d2 = k[len("bottom_up."):] if k.startswith("bottom_up.") else k
        if resnet_only and not k.startswith("bottom_up."):
            continue
        if resnet_only and (d2.endswith("running_mean") or d2.endswith("running_var")):
            continue  # C2 ImageNet files hold AffineChannel scale/bias only
        c2 = d2_to_c2(d2, blocks, last_stage, cfg.MODEL.FPN.NORM)
        blobs[c2] = v.detach().numpy().copy()
        expected[c2] = d2
    # detectron2's converter on these names must give back the original names.
    converted, new_to_orig = D2.c2.convert_c2_detectron_names({k: torch.from_numpy(v) for k, v in blobs.items()})
    assert sorted(converted) == sorted(expected.values()), sorted(set(converted) ^ set(expected.values()))
    for new, orig in new_to_orig.items():
        assert expected[orig] == new, (orig, new, expected[orig])
    return blobs


def write_safetensors(path, tensors):
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    header, chunks, offset = {}, [], 0
    for k, v in tensors.items():
        b = v.detach().contiguous().numpy().astype(v.numpy().dtype.newbyteorder("<")).tobytes()
        header[k] = {"dtype": dtypes[v.dtype], "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in chunks:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = collections.OrderedDict()
    for k, h in header.items():
        if k == "__metadata__":
            continue
        dt = {"F32": np.float32, "I64": np.int64}[h["dtype"]]
        b, e = h["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[8 + n + b:8 + n + e], dtype=dt).reshape(h["shape"]).copy())
    return out


def one_storage(sd):
    """The same float32 tensors as views of one storage (torch.save then writes one data record
    instead of one per tensor: a smaller file; loaders must honour storage offsets)."""
    floats = [k for k, v in sd.items() if v.dtype == torch.float32]
    flat = torch.cat([sd[k].reshape(-1) for k in floats])
    out, offset = collections.OrderedDict(), 0
    for k, v in sd.items():
        if v.dtype == torch.float32:
            out[k] = flat[offset:offset + v.numel()].view(v.shape)
            offset += v.numel()
        else:
            out[k] = v
    return out


def legacy_keys_deterministic(path):
    """torch.save's legacy format names each storage by its memory address (str(storage._cdata)) and
    writes the storages in the sorted order of those names: renames them 0000, 0001, ... in the order
    the object references them and writes their data in that order, so that the file is the same on
    every run."""
    import io
    import pickletools

    with open(path, "rb") as fh:
        data = fh.read()
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, sys info
        for _op in pickletools.genops(f):
            pass
    # The object: each storage's persistent id is ("storage", GLOBAL torch.<Type>Storage, key, "cpu", numel, None).
    # (GLOBALs are memoised: a BINPUT after the GLOBAL, then BINGETs.)
    seen, last_global, memo, prev = [], None, {}, None
    for op, arg, _pos in pickletools.genops(f):
        if op.name == "GLOBAL":
            last_global = arg
        elif op.name in ("BINPUT", "LONG_BINPUT") and prev == "GLOBAL":
            memo[arg] = last_global
        elif op.name in ("BINGET", "LONG_BINGET"):
            last_global = memo.get(arg)
        elif op.name == "BINUNICODE" and last_global and last_global.endswith("Storage") and arg.isdigit():
            if arg not in [k for k, _ in seen]:
                seen.append((arg, last_global.split()[-1]))
            last_global = None
        prev = op.name
    object_end = f.tell()
    keys = pickle.load(f)  # a list of str, sorted: the order of the data
    header_end = f.tell()
    assert sorted(k for k, _ in seen) == keys, (seen, keys)
    elem = {"FloatStorage": 4, "LongStorage": 8}
    types = dict(seen)
    blobs, pos = {}, header_end
    for k in keys:
        n = struct.unpack("<q", data[pos:pos + 8])[0]
        size = 8 + n * elem[types[k]]
        blobs[k] = data[pos:pos + size]
        pos += size
    assert pos == len(data)
    header = data[:object_end]
    for rank, (k, _) in enumerate(seen):
        old = b"X" + struct.pack("<I", len(k)) + k.encode()
        assert header.count(old) == 1, k  # the storage's persistent id (memoised after)
        header = header.replace(old, b"X" + struct.pack("<I", 4) + f"{rank:04d}".encode())
    new_keys = pickle.dumps([f"{rank:04d}" for rank in range(len(seen))], protocol=2)
    with open(path, "wb") as out:
        out.write(header + new_keys + b"".join(blobs[k] for k, _ in seen))


def save_weights(d, kind, model, cfg, shared_storage):
    """Writes the case's checkpoint; returns (file name, a state dict of the FPN module rebuilt from
    the file as detectron2 would read it, for the round-trip check)."""
    sd = model.state_dict()
    if kind == "d2_model_pth":
        full = collections.OrderedDict(("backbone." + k, v) for k, v in sd.items())
        full["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
        full["proposal_generator.rpn_head.conv.weight"] = torch.zeros(2, cfg.MODEL.FPN.OUT_CHANNELS, 3, 3)
        if shared_storage:
            full = one_storage(full)
        torch.save({"model": full, "iteration": 89999}, os.path.join(d, "model_final.pth"))
        back = torch.load(os.path.join(d, "model_final.pth"))["model"]
        return "model_final.pth", {k[len("backbone."):]: v for k, v in back.items() if k.startswith("backbone.")}
    if kind == "fpn_state_dict_pth":
        # the legacy (pre-1.6, non-zip) torch.save format
        torch.save(sd, os.path.join(d, "fpn_state_dict.pth"), _use_new_zipfile_serialization=False)
        legacy_keys_deterministic(os.path.join(d, "fpn_state_dict.pth"))
        return "fpn_state_dict.pth", torch.load(os.path.join(d, "fpn_state_dict.pth"))
    if kind == "safetensors":
        write_safetensors(os.path.join(d, "weights.safetensors"),
                          collections.OrderedDict(("backbone." + k, v) for k, v in sd.items()))
        back = read_safetensors(os.path.join(d, "weights.safetensors"))
        return "weights.safetensors", {k[len("backbone."):]: v for k, v in back.items()}
    if kind in ("c2_pkl", "c2_imagenet_pkl"):
        resnet_only = kind == "c2_imagenet_pkl"
        blobs = c2_blobs(sd, cfg, resnet_only)
        if resnet_only:
            blobs["fc1000_w"] = np.zeros((4, 64), np.float32)  # dropped by every loader
            blobs["fc1000_b"] = np.zeros((4,), np.float32)
            obj = {"blobs": blobs}
        else:
            k0 = next(iter(blobs))
            blobs[k0 + "_momentum"] = np.zeros_like(blobs[k0])  # Detectron1 optimizer state: dropped
            blobs["conv_rpn_fpn2_w"] = np.zeros((2, cfg.MODEL.FPN.OUT_CHANNELS, 3, 3), np.float32)  # RPN head
            obj = {"blobs": blobs}
        name = "model_final.pkl" if not resnet_only else "R-50.pkl"
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump(obj, f, protocol=4)
        with open(os.path.join(d, name), "rb") as f:
            back = pickle.load(f)["blobs"]
        back = {k: torch.from_numpy(v) for k, v in back.items() if not k.endswith("_momentum")}
        converted, _ = D2.c2.convert_c2_detectron_names(back)
        rebuilt = {}
        for k, v in converted.items():
            if k.startswith(("fpn_", "top_block.")):
                rebuilt[k] = v
            elif k.startswith(("stem.", "res")):
                rebuilt["bottom_up." + k] = v
        return name, rebuilt
    raise ValueError(kind)


def pytorch_bf16_error(model, x, outputs, bottom_up_only):
    """What bfloat16 costs on this case in PyTorch: a copy of the model whose convolutions take
    bf16-rounded weights and inputs (float32 accumulation) and round their outputs to bf16, as a bf16
    convolution does; max |bf16 - fp32| / max |fp32| per level. Narrow random networks (bottlenecks of
    1-8 channels, GroupNorm over 1x2 maps) amplify bf16 rounding well past what a trained R-50 sees; a
    bf16 engine's bound on a case is taken relative to this."""
    m = copy.deepcopy(model).eval()

    def bf16(t):
        return t.to(torch.bfloat16).to(torch.float32)

    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.copy_(bf16(mod.weight))
                mod.register_forward_pre_hook(lambda _m, inp: tuple(bf16(t) for t in inp))
                mod.register_forward_hook(lambda _m, _inp, out: bf16(out))
        out = m.bottom_up(x.clone()) if bottom_up_only else m(x.clone())
    return {k: float(f"{float((out[k] - v).abs().max() / v.abs().max()):.3g}") for k, v in outputs.items()}


def check_roundtrip(d, entry, weights_sd, outputs, x):
    """What the C++ test does: the YAML through get_cfg().merge_from_file, the builder, the weights as
    read back from the written file, the written input: the same outputs."""
    cfg = mg.D2.get_cfg()
    cfg.merge_from_file(os.path.join(d, "config.yaml"))
    model = syncbn_as_bn(build(cfg))
    sd = model.state_dict()
    missing = [k for k in sd if k not in weights_sd and not k.endswith("num_batches_tracked")]
    if entry["weights_format"] == "c2_imagenet_pkl":
        missing = [k for k in missing if "running_" not in k]  # FrozenBN statistics: identity
        assert missing and all(k.startswith(("fpn_", "top_block.")) for k in missing), missing
    else:
        assert not missing, missing
    for k, v in weights_sd.items():
        if k in sd:
            sd[k].copy_(v)
    if entry["weights_format"] == "c2_imagenet_pkl":
        for k, v in sd.items():
            if k.endswith("running_mean"):
                v.zero_()
            elif k.endswith("running_var"):
                v.fill_(1.0)
    if entry["weights_format"] == "c2_imagenet_pkl":
        with torch.no_grad():
            out = model.bottom_up(x.clone())
    else:
        out = run(model, x)
    for k, ref in outputs.items():
        assert (out[k] - ref).abs().max() <= 1e-6 * ref.abs().max(), (entry["name"], k)


def make_case(out_root, spec):
    name = spec["name"]
    d = os.path.join(out_root, name)
    os.makedirs(d)
    cfg = mg.cfg_from_overrides(spec["overrides"])
    model = syncbn_as_bn(build(cfg))
    state_names = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    mg.randomize_(model, mg.seed_of(name))
    if spec["weights"] == "c2_imagenet_pkl":
        # AffineChannel (C2 ImageNet): FrozenBN statistics are identity (not in the file).
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if k.endswith("running_mean"):
                    v.zero_()
                elif k.endswith("running_var"):
                    v.fill_(1.0)
    entry = {"name": name, "backbone_name": cfg.MODEL.BACKBONE.NAME, "config": f"{name}/config.yaml",
             "overrides": spec["overrides"], "weights_format": spec["weights"]}
    if spec.get("image"):
        h, w = spec["image"]
        rng = np.random.default_rng(mg.seed_of(name))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # BGR, as DefaultPredictor receives it
        np.save(os.path.join(d, "image.npy"), img)
        # DefaultPredictor.__call__ (INPUT.FORMAT BGR) + GeneralizedRCNN.preprocess_image
        aug = D2.T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        image = aug.get_transform(img).apply_image(img)
        image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1)
        std = torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1)
        il = D2.ImageList.from_tensors([(image - mean) / std], model.size_divisibility)
        x = il.tensor.contiguous()
        entry.update({"image": f"{name}/image.npy", "image_format": "BGR",
                      "resized_size": list(il.image_sizes[0])})
    else:
        x0 = mg.make_input(name, spec["input"])
        il = D2.ImageList.from_tensors(list(x0), model.size_divisibility)
        x = il.tensor.contiguous()
        if tuple(x.shape) != tuple(x0.shape):
            mg.save_array(os.path.join(d, "input_unpadded.npy"), x0)
            entry["input_unpadded"] = f"{name}/input_unpadded.npy"
    mg.calibrate_offsets_(model, x)
    probe = mg.OffsetProbe(model)
    if spec["weights"] == "c2_imagenet_pkl":
        model.eval()
        with torch.no_grad():
            full = model.bottom_up(x.clone())
        outputs = {k: full[k] for k in ["res4", "res5"]}
    else:
        outputs = run(model, x)
    probe.remove()
    output_shape = [[k, s.channels, s.stride] for k, s in model.output_shape().items()]
    deformable = bool(probe.stats)
    for n, mean_abs, _ in probe.stats:
        assert mean_abs > 0.5, (name, n, mean_abs)
    if spec["weights"] != "c2_imagenet_pkl":
        assert list(outputs) == [s[0] for s in output_shape], (list(outputs), output_shape)
        for k, c, s in output_shape:
            y = outputs[k]
            assert tuple(y.shape) == (x.shape[0], c, -(-x.shape[2] // s), -(-x.shape[3] // s)), (name, k, y.shape)
    tol = 2e-3 if deformable else 1e-4
    mg.write_config_yaml(os.path.join(d, "config.yaml"), cfg, spec["overrides"], name)
    with open(os.path.join(d, "config.yaml")) as f:
        text = f.read()
    with open(os.path.join(d, "config.yaml"), "w") as f:
        f.write(text.replace("(tests/data/make_goldens.py)", "(tests/data/make_fpn_goldens.py)", 1))
    weights_file, weights_sd = save_weights(d, spec["weights"], model, cfg, spec.get("shared_storage", False))
    mg.save_array(os.path.join(d, "input.npy"), x)
    entry.update({"weights": f"{name}/{weights_file}", "input": f"{name}/input.npy", "input_shape": list(x.shape),
                  "outputs": {}, "bottom_up_only": spec["weights"] == "c2_imagenet_pkl"})
    for k, y in outputs.items():
        mg.save_array(os.path.join(d, f"{k}.npy"), y)
        entry["outputs"][k] = f"{name}/{k}.npy"
    entry["output_max_abs"] = {k: float(y.abs().max()) for k, y in outputs.items()}
    entry.update({"output_shape": output_shape, "size_divisibility": model.size_divisibility,
                  "in_features": list(model.in_features), "deformable": deformable, "tolerance": tol,
                  "description": spec["description"], "state_dict": state_names})
    if spec["weights"] != "c2_imagenet_pkl":
        entry["float32_vs_float64"] = mg.float64_error(model, x, outputs, tol, name)
    else:
        entry["float32_vs_float64"] = mg.float64_error(model, x, outputs, tol, name,
                                                       forward=lambda m, inp: m.bottom_up(inp))
    if deformable:
        entry["mean_abs_offset"] = {n: round(m, 4) for n, m, _ in probe.stats}
    else:
        entry["pytorch_bf16_error"] = pytorch_bf16_error(model, x, outputs, spec["weights"] == "c2_imagenet_pkl")
    check_roundtrip(d, entry, weights_sd, outputs, x)
    return entry


def write_readme(out_root, entries, commit, total):
    lines = [
        "# FPN golden references",
        "",
        "Made by `tests/data/make_fpn_goldens.py` with detectron2's own `detectron2/modeling/backbone/fpn.py` "
        "(build_resnet_fpn_backbone, build_retinanet_resnet_fpn_backbone from each case's config), "
        "`resnet.py`, `detectron2/layers`, `detectron2/config`, `detectron2/data/transforms`, "
        "`detectron2/structures` and `detectron2/checkpoint/c2_model_loading.py`:",
        "",
        "```",
        "<venv with detectron2's deps>/bin/python tests/data/make_fpn_goldens.py --detectron2 <detectron2 checkout> --out tests/data/fpn",
        "```",
        "",
        f"- detectron2 commit: `{commit}`",
        f"- torch {torch.__version__}, numpy {np.__version__}, CPU, float32; shims as tests/data/make_goldens.py",
        "- every parameter and buffer random (seeded, make_goldens.py's randomize_): norm statistics, "
        "affine parameters and conv biases included; FPN convs N(0, 2/fan_in).",
        "- each case: `config.yaml` (only the overrides; get_cfg().merge_from_file), the weights in the case's "
        "naming (`weights_format`: d2_model_pth = {\"model\": backbone.* + detector entries}, fpn_state_dict_pth = "
        "the FPN module's state_dict, safetensors = backbone.* names, c2_pkl = Caffe2/Detectron1 blob names "
        "inverted from convert_c2_detectron_names and checked with it, c2_imagenet_pkl = ResNet blobs only), "
        "`input.npy` (float32 NCHW, padded to size_divisibility as ImageList.from_tensors pads), "
        "`input_unpadded.npy` where the original size was not a multiple of 32, `image.npy` (uint8 HWC BGR) for the "
        "image case, `<level>.npy` per output.",
        "- manifest: `output_shape` = detectron2's output_shape() as [name, channels, stride] in order; "
        "`state_dict` = the FPN module's state_dict() names and shapes in order; `bottom_up_only`: the references "
        "are the bottom-up's res4/res5 (the FPN's weights are not in the file); a level passes when "
        "max|out - ref| <= tolerance * max|ref| (1e-4, 2e-3 with deformable stages).",
        "- SyncBN: the references run BatchNorm2d modules holding the SyncBatchNorm's tensors "
        "(nn.SyncBatchNorm refuses CPU input; in eval both compute from the running statistics).",
        "- checks in the script: config.yaml loads back to the same config; the weights read back from the written "
        "file (C2 names through detectron2's converter) into a model built from config.yaml reproduce the outputs; "
        "float32 within 1/10 of the tolerance of float64; output shapes = ceil(input / stride).",
        "- `pytorch_bf16_error` (cases without deformable stages): max |bf16 - fp32| / max |fp32| per level of "
        "the same model with bf16-rounded convolution weights, inputs and outputs; a bf16 engine passes when every level "
        "is within max(2e-2, 2 x the case's largest) of its own fp32 (these narrow random networks amplify bf16 "
        "rounding, and levels inherit each other's: p7 from p6).",
        f"- total size: {total / 1e6:.2f} MB",
        "",
        "| case | builder | weights | input | outputs | tol | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(f"| {e['name']} | {e['backbone_name']} | {e['weights_format']} | "
                     f"{'x'.join(map(str, e['input_shape']))} | {', '.join(e['outputs'])} | {e['tolerance']:g} | "
                     f"{e['description']} |")
    lines.append("")
    with open(os.path.join(out_root, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectron2", required=True, help="detectron2 checkout")
    ap.add_argument("--out", required=True, help="output folder, e.g. tests/data/fpn (replaced)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    install(args.detectron2)
    out_root = args.out
    if os.path.isdir(out_root) and os.listdir(out_root):
        if not os.path.isfile(os.path.join(out_root, "manifest.json")):
            sys.exit(f"--out {out_root} is not empty and holds no manifest.json: not replacing it")
        shutil.rmtree(out_root)
    os.makedirs(out_root)
    entries = [make_case(out_root, spec) for spec in CASES]
    for e in entries:
        print(f"{e['name']:22s} {mg.dir_size(os.path.join(out_root, e['name'])) / 1e3:7.1f} kB  "
              + " ".join(f"{k}={v:.3g}" for k, v in e["output_max_abs"].items())
              + "  f32-vs-f64 " + " ".join(f"{v:.1e}" for v in e["float32_vs_float64"].values()))
    commit, _ = mg.d2_commit(args.detectron2)
    manifest = {"generator": "tests/data/make_fpn_goldens.py", "detectron2_commit": commit,
                "torch": torch.__version__, "cases": entries}
    with open(os.path.join(out_root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    write_readme(out_root, entries, commit, mg.dir_size(out_root))
    print(f"{len(entries)} cases, {mg.dir_size(out_root) / 1e6:.2f} MB in {out_root}")


if __name__ == "__main__":
    main()
