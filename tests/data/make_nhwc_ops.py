#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden data of the NHWC CPU-twin tests (tests/backbone/nhwc_ops_test.cpp).

References come from PyTorch (max_pool2d, group_norm, adaptive_avg_pool2d + linear) and from
detectron2's channel LayerNorm formula (u = mean_c x, s = mean_c (x - u)^2, (x - u) / sqrt(s + eps),
then weight * x + bias), evaluated in float64 on float32 inputs and stored as float32, every
activation in NHWC order ([n, h, w, c]).

Run from the repository root (Debian's torch 1.13):
    /usr/bin/python3 tests/data/make_nhwc_ops.py
It rewrites tests/data/nhwc_ops/<case>_{input,out,gamma,beta,weight,bias,params}.npy.
params.npy is int64; its meaning per case kind:
  max_pool_*:   [kernel, stride, padding]
  group_norm_*: [num_groups]  (eps 1e-5)
  layer_norm_*: none          (eps 1e-6)
  avgpool_linear_*: [classes]
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nhwc_ops")


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def save(name, **arrays):
    for key, value in arrays.items():
        arr = value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        np.save(os.path.join(OUT_DIR, f"{name}_{key}.npy"), arr)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for f in os.listdir(OUT_DIR):
        if f.endswith(".npy"):
            os.remove(os.path.join(OUT_DIR, f))
    gen = torch.Generator().manual_seed(20261125)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).float()

    # max_pool2d: ResNet's stem (3, 2, 1), no padding, stride 1, odd sizes (floor).
    for name, shape, k, s, p in [("max_pool_stem", (2, 5, 9, 11), 3, 2, 1),
                                 ("max_pool_k2s2", (1, 3, 7, 8), 2, 2, 0),
                                 ("max_pool_k3s1p1", (1, 4, 6, 5), 3, 1, 1)]:
        x = randn(*shape)
        out = F.max_pool2d(x.double(), k, s, p)
        save(name, input=nhwc(x), out=nhwc(out), params=np.array([k, s, p], dtype=np.int64))

    # group_norm (eps 1e-5), a mean far from 0 to exercise the variance's precision.
    for name, shape, g in [("group_norm_g4", (2, 8, 5, 6), 4), ("group_norm_g1_shift", (1, 6, 7, 3), 1)]:
        x = randn(*shape, scale=2.0, shift=3.0 if "shift" in name else 0.0)
        gamma = randn(shape[1])
        beta = randn(shape[1])
        out = F.group_norm(x.double(), g, gamma.double(), beta.double(), eps=1e-5)
        save(name, input=nhwc(x), gamma=gamma, beta=beta, out=nhwc(out), params=np.array([g], dtype=np.int64))

    # detectron2's LayerNorm over channels (eps 1e-6).
    for name, shape in [("layer_norm_c6", (2, 6, 4, 5)), ("layer_norm_c33", (1, 33, 3, 2))]:
        x = randn(*shape, scale=1.5, shift=0.5)
        gamma = randn(shape[1])
        beta = randn(shape[1])
        xd = x.double()
        u = xd.mean(1, keepdim=True)
        s = (xd - u).pow(2).mean(1, keepdim=True)
        y = (xd - u) / torch.sqrt(s + 1e-6)
        y = gamma.double()[:, None, None] * y + beta.double()[:, None, None]
        save(name, input=nhwc(x), gamma=gamma, beta=beta, out=nhwc(y))

    # adaptive_avg_pool2d(1) + flatten + linear.
    for name, shape, classes in [("avgpool_linear", (2, 16, 5, 7), 10)]:
        x = randn(*shape)
        weight = randn(classes, shape[1], scale=0.5)
        bias = randn(classes)
        pooled = F.adaptive_avg_pool2d(x.double(), 1).flatten(1)
        out = F.linear(pooled, weight.double(), bias.double())
        save(name, input=nhwc(x), weight=weight, bias=bias, out=out, params=np.array([classes], dtype=np.int64))


if __name__ == "__main__":
    main()
