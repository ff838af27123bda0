#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden data of the deform_conv2d tests (tests/backbone/deform_conv_test.cpp, deform_conv_cuda_test.cpp).

References come from torchvision.ops.deform_conv2d (the op detectron2's DeformConv and
ModulatedDeformConv compute), evaluated in float64 on the float32 inputs and stored as float32.

Run from the repository root (Debian's torch 1.13 / torchvision 0.14):
    /usr/bin/python3 tests/data/make_deform.py
It rewrites tests/data/deform/<case>_{input,offset,weight,mask,bias,out,params}.npy and cases.txt.
params.npy is int64 [stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups,
deformable_groups, has_mask, has_bias]; mask / bias files exist only when used.
"""
import os

import numpy as np
import torch
import torchvision
from torchvision.ops import deform_conv2d

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deform")


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# name, N, C, H, W, O, (kh, kw), stride, pad, dilation, groups, deformable_groups, mask, bias, offset scale
CASES = [
    ("basic", 1, 3, 7, 9, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False, False, 1.0),
    ("stride2_mask_bias", 2, 4, 9, 8, 6, (3, 3), (2, 2), (1, 1), (1, 1), 1, 1, True, True, 2.0),
    ("dilation2_mask", 1, 4, 11, 10, 5, (3, 3), (1, 1), (2, 2), (2, 2), 1, 1, True, False, 1.5),
    ("groups2_dg2_mask_bias", 2, 8, 8, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, 2, True, True, 2.0),
    ("dg2_rect_kernel_bias", 1, 6, 10, 9, 4, (2, 3), (2, 1), (0, 1), (1, 2), 1, 2, False, True, 1.0),
    ("large_offsets_mask", 2, 5, 6, 7, 3, (3, 3), (1, 1), (0, 0), (1, 1), 1, 1, True, False, 6.0),
    ("edges_mask", 1, 3, 5, 6, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, False, None),
    ("pointwise_stride2_groups2", 2, 4, 9, 9, 8, (1, 1), (2, 2), (0, 0), (1, 1), 2, 1, False, False, 1.0),
    ("resnext_like", 1, 16, 13, 15, 16, (3, 3), (2, 2), (1, 1), (1, 1), 4, 2, True, False, 1.0),
    # K = 32 * 9 = 288 and Ho * Wo = 360 span several GEMM blocks; O = 10 leaves a partial row tile.
    ("big_k_mask_bias", 1, 32, 20, 18, 10, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True, 1.0),
]


def edge_offsets(n, dg, kh, kw, ho, wo, h, w, stride, pad, dil, rng):
    """Offsets that put the sampling points exactly on the edges of torchvision's conditions
    (-1, 0, height - 1, height, ...), exactly representable in float32."""
    ys = np.array([-1.5, -1.0, -0.5, -0.25, 0.0, h - 1.0, h - 0.5, h, h + 0.5, 2.5])
    xs = np.array([-1.5, -1.0, -0.5, -0.25, 0.0, w - 1.0, w - 0.5, w, w + 0.5, 2.5])
    off = np.zeros((n, dg, kh * kw, 2, ho, wo))
    for i in range(kh):
        for j in range(kw):
            base_y = (np.arange(ho) * stride[0] - pad[0] + i * dil[0])[:, None]
            base_x = (np.arange(wo) * stride[1] - pad[1] + j * dil[1])[None, :]
            ty = rng.choice(ys, size=(n, dg, ho, wo))
            tx = rng.choice(xs, size=(n, dg, ho, wo))
            off[:, :, i * kw + j, 0] = ty - base_y
            off[:, :, i * kw + j, 1] = tx - base_x
    return off.reshape(n, dg * kh * kw * 2, ho, wo).astype(np.float32)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    rng = np.random.default_rng(20240607)
    names = []
    for (name, n, c, h, w, o, (kh, kw), stride, pad, dil, groups, dg, use_mask, use_bias, scale) in CASES:
        ho, wo = out_size(h, kh, stride[0], pad[0], dil[0]), out_size(w, kw, stride[1], pad[1], dil[1])
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        weight = (rng.standard_normal((o, c // groups, kh, kw)) / np.sqrt(c // groups * kh * kw)).astype(np.float32)
        if scale is None:
            offset = edge_offsets(n, dg, kh, kw, ho, wo, h, w, stride, pad, dil, rng)
        else:
            offset = (rng.standard_normal((n, 2 * dg * kh * kw, ho, wo)) * scale).astype(np.float32)
        mask = None
        if use_mask:
            mask = (1.0 / (1.0 + np.exp(-rng.standard_normal((n, dg * kh * kw, ho, wo))))).astype(np.float32)
        bias = rng.standard_normal((o,)).astype(np.float32) if use_bias else None

        t = lambda a: None if a is None else torch.from_numpy(a).double()
        ref = deform_conv2d(t(x), t(offset), t(weight), bias=t(bias), stride=stride, padding=pad, dilation=dil,
                            mask=t(mask))
        ref32 = deform_conv2d(torch.from_numpy(x), torch.from_numpy(offset), torch.from_numpy(weight),
                              bias=None if bias is None else torch.from_numpy(bias), stride=stride, padding=pad,
                              dilation=dil, mask=None if mask is None else torch.from_numpy(mask))
        assert ref.shape == (n, o, ho, wo), (name, ref.shape)
        err32 = (ref32.double() - ref).abs().max().item()
        out = ref.numpy().astype(np.float32)

        params = np.array([stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], groups, dg, int(use_mask),
                           int(use_bias)], dtype=np.int64)
        arrays = {"input": x, "offset": offset, "weight": weight, "out": out, "params": params}
        if mask is not None:
            arrays["mask"] = mask
        if bias is not None:
            arrays["bias"] = bias
        for key, value in arrays.items():
            np.save(os.path.join(OUT_DIR, f"{name}_{key}.npy"), np.ascontiguousarray(value))
        # The share of samples entirely outside the image (value 0), to show the cases reach it.
        off = offset.reshape(n, dg, kh * kw, 2, ho, wo)
        ii, jj = np.divmod(np.arange(kh * kw), kw)
        ys = off[:, :, :, 0] + (np.arange(ho)[None, :, None] * stride[0] - pad[0] + ii[:, None, None] * dil[0])
        xs = off[:, :, :, 1] + (np.arange(wo)[None, None, :] * stride[1] - pad[1] + jj[:, None, None] * dil[1])
        outside = ((ys <= -1) | (ys >= h) | (xs <= -1) | (xs >= w)).mean()
        print(f"{name}: out {tuple(out.shape)} max|ref| {np.abs(out).max():.3f} outside {outside:.0%} "
              f"torchvision float32 vs float64 max err {err32:.2e}")
        names.append(name)
    with open(os.path.join(OUT_DIR, "cases.txt"), "w") as f:
        f.write("# written by tests/data/make_deform.py (torchvision %s, torch %s)\n"
                % (torchvision.__version__, torch.__version__))
        for name in names:
            f.write(name + "\n")


if __name__ == "__main__":
    main()
