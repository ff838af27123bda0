# SPDX-License-Identifier: Apache-2.0
"""Reads safetensors files (featuresink's output) with numpy alone: an 8-byte little-endian
header length, a JSON header, then the tensors' bytes."""

import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": np.uint16}


def read(path):
    """{name: ndarray} and the __metadata__ dict of one safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        dt = np.dtype(_DTYPES[t["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(raw[base + begin:base + end], dtype=dt).reshape(t["shape"])
    return tensors, header.get("__metadata__", {})
