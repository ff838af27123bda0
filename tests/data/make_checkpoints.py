#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the checkpoint test files under tests/data/checkpoints/ and their expected contents
(tests/data/checkpoints/expected.json) for tests/backbone/checkpoint_test.cpp.

Run from the repository root (needs numpy, torch, torchvision and a detectron2 source checkout,
whose pure-Python ResNet, c2_model_loading.py and tools/convert-torchvision-to-d2.py give the
reference names and shapes; nothing of detectron2 is copied into the files):

    /work/venv-d2/bin/python tests/data/make_checkpoints.py [--d2 /work/d2]

(/usr/bin/python3 has no fvcore, which detectron2's package __init__ imports: use the venv.)

The files are tiny fakes of real checkpoints (a few KB each): three small ResNets built with
detectron2's own classes,
  A: BasicStem(3, 4, FrozenBN) + res2 = one BottleneckBlock 4 -> 8 (bottleneck 2)
  B: BasicStem(3, 4, FrozenBN) + res2 = BasicBlock 4 -> 4 + res3 = BasicBlock 4 -> 8 (stride 2),
     num_classes=3 (linear)
  C: BasicStem(3, 4, FrozenBN) + res2..res5 of one BottleneckBlock each (4 -> 8, then 8 -> 8)
with values k/64 (|k| <= 128, running_var > 0) that float16 and bfloat16 represent exactly, saved
in every format the C++ reader handles: Python 2 cPickle protocol 2 (emitted opcode by opcode, there
is no Python 2 here), Python 3 pickle protocols 0 to 5 (numpy.core and numpy._core module names),
detectron2 model-zoo dicts, Caffe2/MSRA blob names, torch.save zip and legacy files, a ZIP64
repackaging, safetensors (written by hand), and malicious pickles that must be refused.
Every file comes out byte-identical on each run except the two legacy torch.save files and
d2zoo_torch_tensors.pkl, whose storage keys are memory addresses (their tensors and expected.json
do not change).
"""
import argparse
import collections
import importlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import types
import zipfile
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "checkpoints")

parser = argparse.ArgumentParser()
parser.add_argument("--d2", default=os.environ.get("DETECTRON2_DIR", "/work/d2"))
ARGS = parser.parse_args()


# ---------------------------------------------------------------------------------------------
# detectron2's ResNet and c2_model_loading without importing the whole package (its __init__
# pulls in optional dependencies that are not needed here).
def _load_d2():
    sys.path.insert(0, ARGS.d2)
    import detectron2  # noqa: F401

    for pkg in ["detectron2.modeling", "detectron2.modeling.backbone", "detectron2.checkpoint"]:
        m = types.ModuleType(pkg)
        m.__path__ = [os.path.join(ARGS.d2, *pkg.split("."))]
        sys.modules[pkg] = m
    resnet = importlib.import_module("detectron2.modeling.backbone.resnet")
    c2 = importlib.import_module("detectron2.checkpoint.c2_model_loading")
    return resnet, c2


resnet, c2_loading = _load_d2()
R = resnet.ResNet


def model_a():
    return R(resnet.BasicStem(3, 4, "FrozenBN"),
             [R.make_stage(resnet.BottleneckBlock, 1, in_channels=4, out_channels=8, bottleneck_channels=2,
                           norm="FrozenBN")], out_features=["res2"])


def model_b():
    return R(resnet.BasicStem(3, 4, "FrozenBN"),
             [R.make_stage(resnet.BasicBlock, 1, in_channels=4, out_channels=4, norm="FrozenBN"),
              R.make_stage(resnet.BasicBlock, 1, in_channels=4, out_channels=8, stride_per_block=[2], norm="FrozenBN")],
             num_classes=3)


def model_c():
    stages = [R.make_stage(resnet.BottleneckBlock, 1, in_channels=4, out_channels=8, bottleneck_channels=2,
                           norm="FrozenBN")]
    for _ in range(3):
        stages.append(R.make_stage(resnet.BottleneckBlock, 1, in_channels=8, out_channels=8, bottleneck_channels=2,
                                   stride_per_block=[2], norm="FrozenBN"))
    return R(resnet.BasicStem(3, 4, "FrozenBN"), stages, out_features=["res5"])


VALUES = {}  # value id -> np.ndarray (float32 values exact in float16 / bfloat16, or int64)


def fill(tag, model, seed):
    """Deterministic values for every entry of a model's state_dict; returns name -> array."""
    rng = np.random.RandomState(seed)
    out = collections.OrderedDict()
    for name, t in model.state_dict().items():
        shape = tuple(t.shape)
        if name.endswith("running_var"):
            v = rng.randint(1, 129, size=shape)
        else:
            v = rng.randint(-128, 129, size=shape)
        arr = (v / 64.0).astype(np.float32)
        VALUES[tag + "/" + name] = arr
        out[name] = arr
    return out


def extra(tag, shape, seed):
    rng = np.random.RandomState(seed)
    arr = (rng.randint(-128, 129, size=shape) / 64.0).astype(np.float32)
    VALUES["extra/" + tag] = arr
    return arr


A = fill("A", model_a(), 1)
B = fill("B", model_b(), 2)
C = fill("C", model_c(), 3)
MODEL_KEYS = {"A": list(A), "B": list(B), "C": list(C)}

FILES = {}  # file name -> description for expected.json


def vid(arr):
    """The id of a registered value: the same object, or else the same shape and values."""
    for k, v in VALUES.items():
        if v is arr:
            return k
    for k, v in VALUES.items():
        if v.shape == arr.shape and np.array_equal(v.astype(np.float64), np.asarray(arr).astype(np.float64)):
            return k
    raise KeyError("value not registered")


def describe(fname, fmt, raw, d2, author="", mh=False, ignored=(), skipped=(), model=None, dtypes=None):
    """raw: list of (stored name, value array); d2: dict detectron2 name -> value array."""
    dtypes = dtypes or {}
    FILES[fname] = {
        "format": fmt,
        "author": author,
        "matching_heuristics": mh,
        "raw": [[n, dtypes.get(n, "float32"), vid(a)] for n, a in raw],
        "d2": {n: vid(a) for n, a in d2.items()},
        "ignored": sorted(ignored),
        "skipped": sorted(skipped),
        "model": model,
    }


def write(fname, data):
    with open(os.path.join(OUT, fname), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# Caffe2 / MSRA names (detectron2's convert_basic_c2_names maps them back).
def c2_names(d2_names):
    inv = {}
    for n in d2_names:
        if n.startswith("stem.conv1.norm."):
            c = "res_conv1_bn_" + {"weight": "s", "bias": "b"}.get(n.split(".")[-1], "")
        elif n == "stem.conv1.weight":
            c = "conv1_w"
        else:
            stage, blk, conv, *rest = n.split(".")
            branch = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}[conv]
            base = "%s_%s_%s" % (stage, blk, branch)
            if rest == ["weight"]:
                c = base + "_w"
            else:
                c = base + "_bn_" + {"weight": "s", "bias": "b"}.get(rest[-1], "")
        if c.endswith("_bn_"):  # running statistics: Caffe2 ImageNet models have none
            continue
        inv[c] = n
    return inv


def c2_expected(model_fn, blobs):
    """Names detectron2 gives the blobs: align_and_update_state_dicts with C2 conversion."""
    model = model_fn()
    ckpt = {k: torch.from_numpy(np.ascontiguousarray(v).astype(v.dtype.newbyteorder("="))) for k, v in blobs.items()}
    out = c2_loading.align_and_update_state_dicts(model.state_dict(), ckpt, c2_conversion=True)
    keys = set(model.state_dict())
    by_id = {id(v): k for k, v in ckpt.items()}
    res = {}
    for k, v in out.items():
        if k in keys:
            res[k] = blobs[by_id[id(v)]]
    return res


# ---------------------------------------------------------------------------------------------
# Python 2 cPickle, protocol 2, emitted by hand (str = bytes as SHORT_BINSTRING / BINSTRING).
class Py2Pickler:
    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = {}
        self.n = 0

    def put(self):
        self.out += (b"q" + bytes([self.n])) if self.n < 256 else (b"r" + struct.pack("<I", self.n))
        self.n += 1
        return self.n - 1

    def get(self, i):
        self.out += (b"h" + bytes([i])) if i < 256 else (b"j" + struct.pack("<I", i))

    def glob(self, mod, name):
        key = (mod, name)
        if key in self.memo:
            self.get(self.memo[key])
        else:
            self.out += b"c" + mod.encode() + b"\n" + name.encode() + b"\n"
            self.memo[key] = self.put()

    def str(self, b):
        if isinstance(b, str):
            b = b.encode("latin1")
        key = ("str", b)
        if key in self.memo and len(b) < 64:
            self.get(self.memo[key])
            return
        self.out += (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)
        self.memo[key] = self.put()

    def int(self, v):
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        else:
            self.out += b"J" + struct.pack("<i", v)

    def tuple_of(self, fns):
        if len(fns) == 0:
            self.out += b")"
            return
        if len(fns) > 3:
            self.out += b"("
        for f in fns:
            f()
        self.out += b"t" if len(fns) > 3 else bytes([0x84 + len(fns)])

    def array(self, a):
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.glob("numpy", "ndarray")
        self.tuple_of([lambda: self.int(0)])
        self.str(b"b")
        self.out += b"\x87R"
        self.put()
        fortran = a.flags.f_contiguous and not a.flags.c_contiguous
        self.out += b"("
        self.int(1)
        self.tuple_of([(lambda d: (lambda: self.int(d)))(d) for d in a.shape])
        self.glob("numpy", "dtype")
        self.str(a.dtype.str[1:])
        self.int(0)
        self.int(1)
        self.out += b"\x87R"
        self.put()
        self.out += b"("
        self.int(3)
        self.str(a.dtype.str[0] if a.dtype.itemsize > 1 else "|")
        self.out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        self.out += b"\x88" if fortran else b"\x89"
        self.str(a.tobytes(order="F" if fortran else "C"))
        self.out += b"tb"

    def value(self, v):
        if isinstance(v, np.ndarray):
            self.array(v)
        elif isinstance(v, dict):
            self.dict(v)
        elif isinstance(v, (bytes, str)):
            self.str(v)
        elif isinstance(v, bool):
            self.out += b"\x88" if v else b"\x89"
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, float):
            self.out += b"G" + struct.pack(">d", v)
        elif v is None:
            self.out += b"N"
        elif isinstance(v, tuple):
            self.tuple_of([(lambda x: (lambda: self.value(x)))(x) for x in v])
            self.put()
        elif isinstance(v, list):
            self.out += b"]"
            self.put()
            if v:
                self.out += b"("
                for x in v:
                    self.value(x)
                self.out += b"e"
        else:
            raise TypeError(type(v))

    def dict(self, d):
        self.out += b"}"
        self.put()
        if d:
            self.out += b"("
            for k, v in d.items():
                self.str(k)
                self.value(v)
            self.out += b"u"

    def dumps(self, obj):
        self.value(obj)
        self.out += b"."
        return bytes(self.out)


def same(a, b):
    return a.dtype.str[1:] == b.dtype.str[1:] and a.shape == b.shape and np.array_equal(a, b)


def check_pickle(data, obj):
    """The bytes must load (with Python's own unpickler) to what was meant."""
    got = pickle.loads(data, encoding="latin1")

    def cmp(x, y, where=""):
        if isinstance(y, np.ndarray):
            assert isinstance(x, np.ndarray) and same(x, y), "array mismatch at " + where
        elif isinstance(y, dict):
            keys = [k.decode("latin1") if isinstance(k, bytes) else k for k in y]
            assert [k for k in x if k in keys] == keys
            for k in y:
                cmp(x[k.decode("latin1") if isinstance(k, bytes) else k], y[k], str(k))

    cmp(got, obj)


# ---------------------------------------------------------------------------------------------
# numpy 2 module names (numpy._core.*) with this numpy 1.x: stand-in functions registered under
# the new names, so that pickle writes the new names; loaded back with find_class mapping them.
def _install_numpy2_names():
    import numpy.core.multiarray as ma
    import numpy.core.numeric as nm

    core = types.ModuleType("numpy._core")
    mm = types.ModuleType("numpy._core.multiarray")
    nn = types.ModuleType("numpy._core.numeric")

    def _reconstruct(*a):
        return ma._reconstruct(*a)

    def _frombuffer(*a):
        return nm._frombuffer(*a)

    _reconstruct.__module__, _reconstruct.__qualname__ = "numpy._core.multiarray", "_reconstruct"
    _frombuffer.__module__, _frombuffer.__qualname__ = "numpy._core.numeric", "_frombuffer"
    mm._reconstruct, nn._frombuffer = _reconstruct, _frombuffer
    sys.modules.update({"numpy._core": core, "numpy._core.multiarray": mm, "numpy._core.numeric": nn})
    return {ma._reconstruct: _reconstruct, nm._frombuffer: _frombuffer}


NUMPY2 = _install_numpy2_names()


class Numpy2Pickler(pickle.Pickler):
    def __init__(self, f, protocol):
        super().__init__(f, protocol=protocol)
        self.protocol_number = protocol

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            rv = obj.__reduce_ex__(self.protocol_number)
            return (NUMPY2.get(rv[0], rv[0]),) + tuple(rv[1:])
        return NotImplemented


def dumps_numpy2(obj, protocol):
    f = io.BytesIO()
    Numpy2Pickler(f, protocol=protocol).dump(obj)
    return f.getvalue()


def prefixed(d, prefix):
    return collections.OrderedDict((prefix + k, v) for k, v in d.items())


# ---------------------------------------------------------------------------------------------
def make_pickles():
    # 1. Python 2 Detectron1 detection model: {"blobs": {...}, "cfg": "..."}, MSRA names.
    inv = c2_names(A)
    blobs = collections.OrderedDict()
    for c, n in inv.items():
        blobs[c] = A[n]
    blobs["res2_0_branch2b_w"] = np.asfortranarray(A["res2.0.conv2.weight"])  # Fortran order
    blobs["res2_0_branch2c_w"] = A["res2.0.conv3.weight"].astype(np.float64)
    blobs["conv1_b"] = extra("conv1_b", (4,), 10)
    blobs["fc1000_w"] = extra("fc1000_w", (5, 8), 11)
    blobs["fc1000_b"] = extra("fc1000_b", (5,), 12)
    blobs["conv_rpn_w"] = extra("conv_rpn_w", (2, 8, 1, 1), 13)
    blobs["bbox_pred_w"] = extra("bbox_pred_w", (8, 2), 14)
    momentum = {"res2_0_branch2a_w_momentum": extra("momentum", (2, 4, 1, 1), 15)}
    all_blobs = collections.OrderedDict(list(blobs.items()) + list(momentum.items()))
    obj = {"blobs": all_blobs, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n", "iter": 90000, "lr": 0.02,
           "flags": (True, False, None), "list": [1, 2, "x"]}
    data = Py2Pickler().dumps(obj)
    check_pickle(data, {"blobs": blobs})
    write("c2_py2_blobs.pkl", data)
    expected = c2_expected(model_a, blobs)
    dtypes = {"res2_0_branch2c_w": "float64"}
    describe("c2_py2_blobs.pkl", "pickle", list(blobs.items()), expected, author="Caffe2", mh=True,
             ignored=["conv1_b", "fc1000_w", "fc1000_b"], skipped=["conv_rpn_w", "bbox_pred_w"], model="A",
             dtypes=dtypes)

    # 2. Python 3, protocol 2: Caffe2 ImageNet model (no "blobs"), bytes through _codecs.encode,
    #    one big-endian blob, and *_momentum entries detectron2 drops when reading.
    blobs = collections.OrderedDict((c, A[n]) for c, n in inv.items())
    blobs["res2_0_branch1_w"] = A["res2.0.shortcut.weight"].astype(">f4")
    blobs["fc1000_w"] = VALUES["extra/fc1000_w"]
    obj = collections.OrderedDict(blobs)
    obj["res2_0_branch1_w_momentum"] = VALUES["extra/momentum"]
    data = pickle.dumps(obj, protocol=2)
    assert b"_codecs" in data
    check_pickle(data, blobs)
    write("c2_py3_proto2.pkl", data)
    describe("c2_py3_proto2.pkl", "pickle", list(blobs.items()), c2_expected(model_a, blobs), author="Caffe2", mh=True,
             ignored=["fc1000_w"], model="A")

    # 3. detectron2 model zoo, protocol 2 with numpy._core names; FPN and heads are skipped.
    model = prefixed(A, "backbone.bottom_up.")
    model["backbone.fpn_lateral2.weight"] = extra("fpn_lateral2", (4, 8, 1, 1), 20)
    model["proposal_generator.rpn_head.conv.weight"] = VALUES["extra/conv_rpn_w"]
    model["pixel_mean"] = extra("pixel_mean", (3, 1, 1), 21)
    obj = {"model": model, "__author__": "Detectron2 Model Zoo"}
    data = dumps_numpy2(obj, 2)
    assert b"numpy._core.multiarray" in data
    write("d2zoo_numpy2_proto2.pkl", data)
    describe("d2zoo_numpy2_proto2.pkl", "pickle", list(model.items()), A, author="Detectron2 Model Zoo", model="A",
             skipped=["backbone.fpn_lateral2.weight", "proposal_generator.rpn_head.conv.weight", "pixel_mean"])

    # 4. C4 model (roi_heads.res5), protocol 3, float16 and big-endian float64 entries.
    model = collections.OrderedDict()
    dtypes = {}
    for k, v in C.items():
        name = ("roi_heads." + k) if k.startswith("res5.") else ("backbone." + k)
        if k.endswith("conv2.weight"):
            v = v.astype(np.float16)
            dtypes[name] = "float16"
        elif k.endswith("conv1.norm.bias"):
            v = v.astype(">f8")
            dtypes[name] = "float64"
        VALUES.setdefault("C/" + k, C[k])
        model[name] = v
    raw = [(n, C[(n[len("roi_heads."):] if n.startswith("roi_heads.") else n[len("backbone."):])]) for n in model]
    model["roi_heads.box_predictor.cls_score.weight"] = extra("cls_score", (3, 8), 22)
    raw.append(("roi_heads.box_predictor.cls_score.weight", VALUES["extra/cls_score"]))
    obj = {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": False}
    data = pickle.dumps(obj, protocol=3)
    check_pickle(data, {"model": model})
    write("d2zoo_c4_proto3.pkl", data)
    describe("d2zoo_c4_proto3.pkl", "pickle", raw, C, author="Detectron2 Model Zoo", model="C", dtypes=dtypes,
             skipped=["roi_heads.box_predictor.cls_score.weight"])

    # 5. protocol 4: bare detectron2 names, Fortran order, numpy scalars and a zoo of plain
    #    containers that are not tensors (left out).
    model = collections.OrderedDict(A)
    model["res2.0.conv1.weight"] = np.asfortranarray(A["res2.0.conv1.weight"])
    model["stem.conv1.weight"] = np.asfortranarray(A["stem.conv1.weight"])
    model["scale"] = np.float32(1.5)
    model["names"] = np.array(["a", "bc"])  # arrays of strings, objects and records are not tensors: left out
    model["objects"] = np.array([1, "x"], dtype=object)
    model["records"] = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])
    VALUES["extra/scale"] = np.array(1.5, dtype=np.float32)
    raw = list(A.items()) + [("scale", VALUES["extra/scale"])]
    obj = {"model": model, "__author__": "torchvision", "matching_heuristics": True,
           "extra": {"set": {1, 2}, "frozenset": frozenset(["a"]), "bytearray": bytearray(b"\x00\x01"),
                     "od": collections.OrderedDict(a=1), "tuple": (1, 2.5, None), "big": 2 ** 70, "neg": -(2 ** 40),
                     "text": "\u00e9t\u00e9", "bytes": b"\xff"}}
    data = pickle.dumps(obj, protocol=4)
    write("d2zoo_proto4.pkl", data)
    describe("d2zoo_proto4.pkl", "pickle", raw, A, author="torchvision", mh=True, model="A", skipped=["scale"])

    # 6. protocol 5 (PickleBuffer / _frombuffer, BYTEARRAY8), backbone. prefix, mixed dtypes.
    model = prefixed(A, "backbone.")
    dtypes = {}
    model["backbone.res2.0.conv2.weight"] = np.asfortranarray(A["res2.0.conv2.weight"])
    model["backbone.res2.0.conv3.weight"] = A["res2.0.conv3.weight"].astype(np.float16)
    model["backbone.stem.conv1.norm.bias"] = A["stem.conv1.norm.bias"].astype(np.float64)
    dtypes = {"backbone.res2.0.conv3.weight": "float16", "backbone.stem.conv1.norm.bias": "float64"}
    obj = {"model": model, "__author__": "test"}
    data = pickle.dumps(obj, protocol=5)
    assert b"_frombuffer" in data and b"\x96" in data
    check_pickle(data, {"model": model})
    write("d2zoo_proto5.pkl", data)
    describe("d2zoo_proto5.pkl", "pickle", list(prefixed(A, "backbone.").items()), A, author="test", model="A",
             dtypes=dtypes)

    # 7. protocol 5 with numpy._core names.
    model = collections.OrderedDict(A)
    model["res2.0.conv2.weight"] = np.asfortranarray(A["res2.0.conv2.weight"])
    data = dumps_numpy2({"model": model, "__author__": "numpy2"}, 5)
    assert b"numpy._core.numeric" in data
    write("d2zoo_numpy2_proto5.pkl", data)
    describe("d2zoo_numpy2_proto5.pkl", "pickle", list(A.items()), A, author="numpy2", model="A")

    # 8. torch tensors written by pickle (not torch.save): each storage is a legacy torch.save
    #    stream inside the pickle (torch.storage._load_from_bytes).
    model = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in A.items())
    model["res2.0.conv3.weight"] = model["res2.0.conv3.weight"].half()
    flat = torch.cat([model["res2.0.conv2.norm.weight"], model["res2.0.conv2.norm.bias"]])
    model["res2.0.conv2.norm.weight"], model["res2.0.conv2.norm.bias"] = flat[:2], flat[2:]
    data = pickle.dumps({"model": model, "__author__": "pickled torch"}, protocol=4)
    assert b"_load_from_bytes" in data
    write("d2zoo_torch_tensors.pkl", data)
    describe("d2zoo_torch_tensors.pkl", "pickle", list(A.items()), A, author="pickled torch", model="A",
             dtypes={"res2.0.conv3.weight": "float16"})

    # 9. protocols 0 and 1 (text opcodes, escaped STRING / UNICODE data).
    for proto in (0, 1):
        fname = "d2zoo_proto%d.pkl" % proto
        data = pickle.dumps({"model": collections.OrderedDict(A), "__author__": "proto%d" % proto}, protocol=proto)
        check_pickle(data, {"model": A})
        write(fname, data)
        describe(fname, "pickle", list(A.items()), A, author="proto%d" % proto, model="A")


# ---------------------------------------------------------------------------------------------
def t(arr):
    return torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32, copy=True))


class _TaggedPickler(pickle.Pickler):
    """PyTorch 2 pickles a plain tensor that has attributes through _rebuild_from_type_v2; this
    torch 1.13 only does so for subclasses, so the newer form is produced here."""

    def reducer_override(self, obj):
        if type(obj) is torch.Tensor and getattr(obj, "note", None):
            func, args = obj._reduce_ex_internal(2)
            return (torch._tensor._rebuild_from_type_v2, (func, torch.Tensor, args, {"note": obj.note}))
        return NotImplemented


_TAGGED_PICKLE = types.SimpleNamespace(Pickler=_TaggedPickler, __name__="pickle")


def make_torch():
    # 1. detectron2 training checkpoint: {"model": ..., "optimizer": ..., ...}, zip format.
    model = collections.OrderedDict((k, t(v)) for k, v in prefixed(A, "backbone.bottom_up.").items())
    model["backbone.fpn_output2.weight"] = t(extra("fpn_output2", (4, 4, 3, 3), 30))
    model["proposal_generator.rpn_head.objectness_logits.bias"] = t(extra("objectness", (3,), 31))
    obj = {"model": model, "iteration": 90000,
           "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.02, "params": [0]}]},
           "scheduler": {"base_lrs": [0.02], "last_epoch": 5}}
    torch.save(obj, os.path.join(OUT, "d2_checkpoint.pth"))
    raw = list(prefixed(A, "backbone.bottom_up.").items())
    raw += [("backbone.fpn_output2.weight", VALUES["extra/fpn_output2"]),
            ("proposal_generator.rpn_head.objectness_logits.bias", VALUES["extra/objectness"])]
    describe("d2_checkpoint.pth", "torch", raw, A, model="A",
             skipped=["backbone.fpn_output2.weight", "proposal_generator.rpn_head.objectness_logits.bias"])

    # 2. bare state dict, zip format: float16 / bfloat16 / float64, a transposed (non-contiguous)
    #    tensor, two tensors sharing one storage, an nn.Parameter, a tensor with an attribute
    #    (_rebuild_from_type_v2) and BatchNorm's num_batches_tracked.
    sd = collections.OrderedDict((k, t(v)) for k, v in A.items())
    dtypes = {}
    sd["res2.0.conv3.weight"] = sd["res2.0.conv3.weight"].half()
    sd["res2.0.conv2.weight"] = sd["res2.0.conv2.weight"].bfloat16()
    sd["stem.conv1.norm.running_var"] = sd["stem.conv1.norm.running_var"].double()
    dtypes.update({"res2.0.conv3.weight": "float16", "res2.0.conv2.weight": "bfloat16",
                   "stem.conv1.norm.running_var": "float64"})
    w = sd["res2.0.shortcut.weight"]  # [8, 4, 1, 1] stored transposed
    sd["res2.0.shortcut.weight"] = w.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    assert not sd["res2.0.shortcut.weight"].is_contiguous()
    flat = torch.cat([sd["res2.0.conv1.norm.weight"], sd["res2.0.conv1.norm.bias"]])
    sd["res2.0.conv1.norm.weight"], sd["res2.0.conv1.norm.bias"] = flat[:2], flat[2:]
    sd["res2.0.conv1.weight"] = torch.nn.Parameter(sd["res2.0.conv1.weight"], requires_grad=False)
    tagged = sd["stem.conv1.norm.weight"].clone()
    tagged.note = "attribute"
    sd["stem.conv1.norm.weight"] = tagged
    sd["stem.conv1.norm.num_batches_tracked"] = torch.tensor(7)
    VALUES["int/7"] = np.array(7, dtype=np.int64)
    torch.save(sd, os.path.join(OUT, "d2_state_dict.pt"), pickle_module=_TAGGED_PICKLE)
    with zipfile.ZipFile(os.path.join(OUT, "d2_state_dict.pt")) as z:
        pkl = z.read([n for n in z.namelist() if n.endswith("data.pkl")][0])
    assert b"_rebuild_from_type_v2" in pkl and b"_rebuild_parameter" in pkl and b"BFloat16Storage" in pkl
    raw = list(A.items()) + [("stem.conv1.norm.num_batches_tracked", VALUES["int/7"])]
    dtypes["stem.conv1.norm.num_batches_tracked"] = "int64"
    describe("d2_state_dict.pt", "torch", raw, A, model="A", dtypes=dtypes,
             ignored=["stem.conv1.norm.num_batches_tracked"])

    # 3. the same archive repackaged with ZIP64 records everywhere (as large files have them).
    with zipfile.ZipFile(os.path.join(OUT, "d2_state_dict.pt")) as z:
        entries = [(("archive/" + n.split("/", 1)[1]), z.read(n)) for n in z.namelist()]
    write("d2_state_dict_zip64.pth", zip64(entries))
    FILES["d2_state_dict_zip64.pth"] = dict(FILES["d2_state_dict.pt"])

    # 4. torchvision names (model B), zip format; detectron2's converter gives the reference names.
    import torchvision

    tv = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    tv_keys = [k for k in tv.state_dict() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "fc")]
    mapping = run_tv_converter(tv_keys)
    sd = collections.OrderedDict()
    raw, expected, ignored, dtypes = [], {}, [], {}
    for k in tv_keys:
        d2 = mapping[k]
        if d2.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(3)
            VALUES.setdefault("int/3", np.array(3, dtype=np.int64))
            raw.append((k, VALUES["int/3"]))
            dtypes[k] = "int64"
            ignored.append(k)
            continue
        d2 = "linear." + d2[len("stem.fc."):] if d2.startswith("stem.fc.") else d2  # fc -> detectron2's linear
        sd[k] = t(B[d2])
        raw.append((k, B[d2]))
        expected[d2] = B[d2]
    assert sorted(expected) == sorted(B), "torchvision names do not cover model B"
    torch.save(sd, os.path.join(OUT, "torchvision.pth"))
    describe("torchvision.pth", "torch", raw, expected, model="B", ignored=ignored, dtypes=dtypes)
    # ... and detectron2's converter's own output (.pkl, "stem.fc.*" names as the script writes them).
    conv = run_tv_converter(tv_keys, sd)
    raw = [(k, B[k] if k in B else VALUES["int/3"]) for k in conv]
    conv_expected = {k: B[k] for k in conv if k in B}
    conv_dtypes = {k: "int64" for k in conv if k.endswith("num_batches_tracked")}
    fc = [k for k in conv if k.startswith("stem.fc.")]
    for k in fc:
        VALUES["tvfc/" + k] = B["linear." + k[len("stem.fc."):]]
        raw[[n for n, _ in raw].index(k)] = (k, VALUES["tvfc/" + k])
        conv_expected[k] = VALUES["tvfc/" + k]
    describe("torchvision_converted.pkl", "pickle", raw, conv_expected, author="torchvision", mh=True, model="B",
             ignored=[k for k in conv if k.endswith("num_batches_tracked")], dtypes=conv_dtypes)

    # 5. legacy (pre-1.6) format: C4 model C with backbone. / roi_heads.res5. names, float16,
    #    shared storage, non-contiguous tensor.
    sd = collections.OrderedDict()
    raw, dtypes = [], {}
    for k, v in C.items():
        name = ("roi_heads." + k) if k.startswith("res5.") else ("backbone." + k)
        sd[name] = t(v)
        raw.append((name, v))
    sd["backbone.res3.0.conv1.weight"] = sd["backbone.res3.0.conv1.weight"].half()
    dtypes["backbone.res3.0.conv1.weight"] = "float16"
    flat = torch.cat([sd["backbone.res4.0.conv3.norm.weight"], sd["backbone.res4.0.conv3.norm.bias"]])
    sd["backbone.res4.0.conv3.norm.weight"], sd["backbone.res4.0.conv3.norm.bias"] = flat[:8], flat[8:]
    w = sd["roi_heads.res5.0.conv2.weight"]
    sd["roi_heads.res5.0.conv2.weight"] = w.transpose(0, 1).contiguous().transpose(0, 1)
    torch.save(sd, os.path.join(OUT, "legacy_c4.pth"), _use_new_zipfile_serialization=False)
    describe("legacy_c4.pth", "torch", raw, C, model="C", dtypes=dtypes)

    # 6. "model"-wrapped legacy file with torchvision-converted names and a "module." prefix
    #    (DistributedDataParallel), as fvcore strips it.
    sd = collections.OrderedDict(("module." + k, t(v)) for k, v in A.items())
    torch.save({"model": sd, "iteration": 1}, os.path.join(OUT, "legacy_ddp_wrapped.pt"),
               _use_new_zipfile_serialization=False)
    describe("legacy_ddp_wrapped.pt", "torch", list(prefixed(A, "module.").items()), A, model="A")


def run_tv_converter(tv_keys, sd=None):
    """Runs detectron2's tools/convert-torchvision-to-d2.py; returns {torchvision name: d2 name}
    (or, given `sd`, the converted .pkl's names in order after writing it to checkpoints/)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "tv.pth")
        dst = os.path.join(OUT, "torchvision_converted.pkl") if sd is not None else os.path.join(tmp, "out.pkl")
        torch.save(sd if sd is not None else collections.OrderedDict((k, torch.zeros(1)) for k in tv_keys), src)
        subprocess.run([sys.executable, os.path.join(ARGS.d2, "tools", "convert-torchvision-to-d2.py"), src, dst],
                       check=True, stdout=subprocess.DEVNULL)
        with open(dst, "rb") as f:
            out = pickle.load(f)
    names = list(out["model"])
    if sd is not None:
        assert out["__author__"] == "torchvision" and out["matching_heuristics"] is True
        return names
    assert len(names) == len(tv_keys)
    return dict(zip(tv_keys, names))


def zip64(entries):
    """A stored zip archive with ZIP64 extra fields in every header and a ZIP64 end record."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        nb = name.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = len(out)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(nb),
                           len(local_extra)) + nb + local_extra
        out += data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(nb), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + nb + cextra
    cd_off = len(out)
    out += central
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with zipfile.ZipFile(io.BytesIO(bytes(out))) as z:  # Python's reader must agree
        assert z.testzip() is None and [i.filename for i in z.infolist()] == [n for n, _ in entries]
    return bytes(out)


# ---------------------------------------------------------------------------------------------
def make_safetensors():
    order = list(prefixed(A, "backbone.bottom_up.").items())
    dtypes = {"backbone.bottom_up.res2.0.conv1.weight": "F16", "backbone.bottom_up.res2.0.conv2.weight": "BF16",
              "backbone.bottom_up.stem.conv1.norm.running_mean": "F64"}
    header, blobs, pos = collections.OrderedDict(), [], 0
    header["__metadata__"] = {"format": "pt"}
    raw = []
    for name, v in order + [("backbone.bottom_up.stem.conv1.norm.num_batches_tracked", None)]:
        if v is None:
            data, dt, shape = struct.pack("<q", 7), "I64", []
            raw.append((name, VALUES["int/7"]))
        else:
            dt = dtypes.get(name, "F32")
            tv = torch.from_numpy(v)
            if dt == "F16":
                data = v.astype("<f2").tobytes()
            elif dt == "BF16":
                data = tv.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
            elif dt == "F64":
                data = v.astype("<f8").tobytes()
            else:
                data = v.astype("<f4").tobytes()
            shape = list(v.shape)
            raw.append((name, v))
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    write("d2.safetensors", struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
    names = {"F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64"}
    fd = {n: names[d] for n, d in dtypes.items()}
    fd["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"] = "int64"
    describe("d2.safetensors", "safetensors", raw, A, model="A", dtypes=fd,
             ignored=["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"])


# ---------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def make_malicious():
    evil = {}
    evil["evil_os_system_proto0.pkl"] = (b"cos\nsystem\n(S'echo pwned'\ntR.", "os.system")
    evil["evil_eval_stack_global.pkl"] = (
        b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x031+1\x94\x85\x94R\x94.",
        "builtins.eval")
    evil["evil_posix_system.pkl"] = (pickle.dumps({"model": {"w": np.zeros(2, np.float32)}, "__author__": "x",
                                                   "x": _Evil(os.system, "echo pwned")}, protocol=2), "posix.system")
    evil["evil_getattr_proto4.pkl"] = (pickle.dumps(_Evil(getattr, "x"), protocol=4), "builtins.getattr")
    evil["evil_subprocess_inst.pkl"] = (b"(S'echo pwned'\nisubprocess\ncheck_output\n.", "subprocess.check_output")
    evil["evil_os_system_stack_global.pkl"] = (
        b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x0aecho pwned\x94\x85\x94R\x94.", "os.system")
    # protocol 2 writes Python 2 module names (fix_imports): __builtin__
    evil["evil_eval_global_proto2.pkl"] = (pickle.dumps(_Evil(eval, "1+1"), protocol=2), "__builtin__.eval")
    evil["evil_posix_system_proto5.pkl"] = (
        pickle.dumps({"model": {"w": np.zeros(2, np.float32)}, "__author__": "x", "x": _Evil(os.system, "echo pwned")},
                     protocol=5), "posix.system")
    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode"), ("numpy.core.numeric", "_frombuffer")}

    class Spy(pickle.Unpickler):  # Python's own unpickler names the first forbidden global
        def find_class(self, module, name):
            if (module, name) in allowed:
                return super().find_class(module, name)
            raise RuntimeError(module + "." + name)

    for fname, (data, g) in evil.items():
        try:
            Spy(io.BytesIO(data), encoding="latin1").load()
            raise AssertionError(fname + " loads")
        except RuntimeError as e:
            assert str(e) == g, (fname, str(e))
        write(fname, data)
    # a torch.save archive whose data.pkl calls os.system
    torch.save({"model": {"w": torch.zeros(2)}, "x": _Evil(os.system, "echo pwned")},
               os.path.join(OUT, "evil_torch_zip.pth"))
    evil["evil_torch_zip.pth"] = (None, "posix.system")
    return {k: v[1] for k, v in evil.items()}


def make_unsupported():
    """Files that must be refused with a message naming the problem (file -> part of the message)."""
    errors = {}
    data = pickle.dumps({"model": {"res2.0.conv1.weight": np.arange(4, dtype=np.uint16)}, "__author__": "x"}, protocol=4)
    write("unsupported_uint16.pkl", data)
    errors["unsupported_uint16.pkl"] = "entry 'res2.0.conv1.weight': numpy dtype 'u2' is not supported"
    data = pickle.dumps({"model": {"w": np.ones(2, dtype=np.complex64)}, "__author__": "x"}, protocol=2)
    write("unsupported_complex.pkl", data)
    errors["unsupported_complex.pkl"] = "numpy dtype 'c8' is not supported"
    sd = {"w": torch.zeros(2, dtype=torch.complex64)}
    torch.save(sd, os.path.join(OUT, "unsupported_complex.pth"))
    errors["unsupported_complex.pth"] = "torch storage type 'torch.ComplexFloatStorage' is not supported"
    torch.save({"w": torch.ones(1).expand(1000)}, os.path.join(OUT, "unsupported_expanded.pt"))
    errors["unsupported_expanded.pt"] = "overlapping (expanded) tensors are not supported"
    return errors


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    make_pickles()
    make_torch()
    make_safetensors()
    forbidden = make_malicious()
    errors = make_unsupported()
    # torch.load must agree with the expectations for the torch files
    for fname, d in FILES.items():
        if d["format"] != "torch":
            continue
        obj = torch.load(os.path.join(OUT, fname), map_location="cpu")
        sd = obj["model"] if "model" in obj else obj
        assert [n for n, _, _ in d["raw"]] == list(sd), fname
        for n, dt, v in d["raw"]:
            assert str(sd[n].dtype).replace("torch.", "") == dt, (fname, n)
            assert np.array_equal(sd[n].to(torch.float64).numpy(), VALUES[v].astype(np.float64)), (fname, n)
    used = {v for d in FILES.values() for v in [r[2] for r in d["raw"]] + list(d["d2"].values())}
    values = {k: {"shape": list(v.shape), "dtype": str(v.dtype).lstrip("<>="),
                  "data": [float(x) if v.dtype.kind == "f" else int(x) for x in np.ascontiguousarray(v).ravel()]}
              for k, v in VALUES.items() if k in used}
    models = {k: [[n, list(VALUES[k + "/" + n].shape)] for n in keys] for k, keys in MODEL_KEYS.items()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"files": FILES, "values": values, "models": models, "forbidden": forbidden,
                   "errors": errors}, f,
                  separators=(",", ":"), sort_keys=True)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("wrote %d files, %d bytes, to %s" % (len(os.listdir(OUT)), total, OUT))


if __name__ == "__main__":
    main()
