#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden data for tests/backbone/preprocess_test.cpp and tests/backbone/npy_test.cpp.

Run from the repository root with the detectron2 venv (numpy, PIL, torch, fvcore):

    /work/venv-d2/bin/python tests/data/make_preprocess.py [--d2 /work/d2]

The references come from code this project did not write:
  * PIL's Image.resize(size, Image.BILINEAR) (Pillow version recorded in preprocess/info.txt),
  * detectron2's own ResizeShortestEdge.get_output_shape / ResizeTransform.apply_image and
    ImageList.from_tensors, imported from a detectron2 checkout (default /work/d2; only pure-Python
    modules are used, optional packages that those modules import but do not need here are stubbed),
  * numpy.save / numpy.lib.format for the .npy files.
Everything lands in tests/data/preprocess/ (a few tens of KB). The random data is seeded, so
re-running gives identical files for the same numpy/Pillow versions.
"""
import argparse
import os
import sys
import types

import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "preprocess")


def import_detectron2(root):
    """detectron2.data.transforms and detectron2.structures.ImageList without detectron2.data's
    package __init__ (which pulls in datasets, COCO API, cloudpickle...)."""
    sys.path.insert(0, root)

    def stub(name, **kw):
        if name in sys.modules:
            return sys.modules[name]
        try:
            __import__(name)
            return sys.modules[name]
        except ImportError:
            m = types.ModuleType(name)
            m.__dict__.update(kw)
            sys.modules[name] = m
            return m

    def parse_version(s):
        return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in s.split(".")[:3])

    pv = stub("packaging.version", parse=parse_version)
    pk = stub("packaging")
    if not hasattr(pk, "version"):
        pk.version = pv
    stub("pycocotools")
    stub("pycocotools.mask")
    if not hasattr(sys.modules["pycocotools"], "mask"):
        sys.modules["pycocotools"].mask = sys.modules["pycocotools.mask"]
    import detectron2  # noqa: F401

    data = types.ModuleType("detectron2.data")
    data.__path__ = [os.path.join(root, "detectron2", "data")]
    sys.modules["detectron2.data"] = data
    import detectron2.data.transforms as T
    from detectron2.structures import ImageList

    return T, ImageList


def save(name, array):
    np.save(os.path.join(OUT, name), array, allow_pickle=False)


def make_resize(rng):
    sources = {
        "rgb37x53": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        "gray64x48": rng.integers(0, 256, (64, 48), dtype=np.uint8),
        "rgb20x30": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "gray1x7": rng.integers(0, 256, (1, 7), dtype=np.uint8),
    }
    # Saturated blocks make clipping at 0 and 255 matter.
    sources["rgb37x53"][:8, :8] = 255
    sources["rgb37x53"][-8:, -8:] = 0
    targets = {  # (new_w, new_h)
        "rgb37x53": [(29, 20), (17, 12), (53, 25), (40, 37), (80, 60), (100, 20), (7, 5), (53, 37)],
        "gray64x48": [(33, 45), (48, 20), (13, 64), (97, 131), (5, 7), (31, 32)],
        "rgb20x30": [(45, 30), (61, 41), (30, 57), (1, 1), (3, 200)],
        "gray1x7": [(3, 4), (7, 3)],
    }
    lines = []
    for name, img in sources.items():
        save("src_%s.npy" % name, img)
        pil = Image.fromarray(img)  # "L" for 2-d, "RGB" for 3 channels
        assert pil.mode == ("L" if img.ndim == 2 else "RGB")
        for w, h in targets[name]:
            out = np.asarray(pil.resize((w, h), Image.BILINEAR))
            fname = "resize_%s_%dx%d.npy" % (name, w, h)
            save(fname, out)
            lines.append("%s src_%s.npy %d %d %s" % (pil.mode, name, w, h, fname))
    with open(os.path.join(OUT, "resize_cases.txt"), "w") as f:
        f.write("# mode source new_width new_height expected (PIL Image.resize BILINEAR)\n")
        f.write("\n".join(lines) + "\n")


def make_shapes(T):
    table = [
        (480, 640, 800, 1333), (640, 480, 800, 1333), (1080, 1920, 800, 1333), (1920, 1080, 800, 1333),
        (600, 600, 800, 1333), (37, 53, 20, 1333), (53, 37, 20, 1333), (37, 53, 24, 30),
        (20, 30, 45, 1333), (333, 500, 800, 1000), (500, 333, 640, 1000), (427, 640, 800, 1333),
        (375, 500, 600, 1000), (1, 10000, 800, 1333), (7, 3, 5, 9), (101, 103, 99, 100),
        (768, 1024, 512, 853), (1200, 1600, 800, 1066), (999, 1001, 800, 801), (1, 1, 1, 1),
        (481, 641, 800, sys.maxsize), (3000, 4000, 1200, 2000), (400, 1200, 800, 1333),
        (1200, 400, 800, 1333), (545, 817, 800, 1333),
    ]
    rows = []
    for h, w, short, mx in table:
        nh, nw = T.ResizeShortestEdge.get_output_shape(h, w, short, mx)
        rows.append((h, w, short, mx, nh, nw))
    save("shapes.npy", np.array(rows, dtype=np.int64))


def make_preprocess(rng, T, ImageList):
    import torch

    msra = ([103.530, 116.280, 123.675], [1.0, 1.0, 1.0])
    torchvision_rgb = ([123.675, 116.280, 103.530], [58.395, 57.120, 57.375])
    images = {
        "bgr37x53": (rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), "BGR"),
        "rgb20x30": (rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB"),
        "gray31x45": (rng.integers(0, 256, (31, 45), dtype=np.uint8), "L"),
    }
    cases = [
        # name, image, model format, (mean, std), min, max, size_divisibility
        ("bgr_msra_div32", "bgr37x53", "BGR", msra, 20, 1333, 32),
        ("bgr_to_rgb_tv_max", "bgr37x53", "RGB", torchvision_rgb, 24, 30, 32),
        ("rgb_to_bgr_up", "rgb20x30", "BGR", msra, 45, 1333, 0),
        ("rgb_tv_noresize_div8", "rgb20x30", "RGB", torchvision_rgb, 0, 1333, 8),
        ("gray_rgb_tv", "gray31x45", "RGB", torchvision_rgb, 17, 1333, 32),
        ("gray_bgr_same_size", "gray31x45", "BGR", msra, 31, 1333, 16),
    ]
    for name, (img, fmt) in images.items():
        save("pre_src_%s.npy" % name, img)
    lines = []
    for name, src, model_format, (mean, std), min_size, max_size, div in cases:
        img, fmt = images[src]
        # The image DefaultPredictor.__call__ receives: (H, W, C) in BGR order. A gray image reaches
        # it as detectron2's read_image(path, "BGR") makes it: PIL convert("RGB") (three equal
        # channels), flipped to BGR.
        if fmt == "L":
            bgr = np.asarray(Image.fromarray(img).convert("RGB"))[:, :, ::-1]
        elif fmt == "RGB":
            bgr = img[:, :, ::-1]
        else:
            bgr = img
        # DefaultPredictor.__call__
        original_image = bgr
        if model_format == "RGB":
            original_image = original_image[:, :, ::-1]
        height, width = original_image.shape[:2]
        aug = T.ResizeShortestEdge([min_size, min_size], max_size)
        image = aug.get_transform(original_image).apply_image(original_image)
        image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        # GeneralizedRCNN.preprocess_image
        pixel_mean = torch.tensor(mean).view(-1, 1, 1)
        pixel_std = torch.tensor(std).view(-1, 1, 1)
        x = (image - pixel_mean) / pixel_std
        images_list = ImageList.from_tensors([x], div)
        out = images_list.tensor.numpy()
        rh, rw = images_list.image_sizes[0]
        save("pre_%s.npy" % name, out.astype(np.float32))
        lines.append(" ".join(str(v) for v in [
            name, "pre_src_%s.npy" % src, fmt, model_format, min_size, max_size, div, int(rh), int(rw),
            height, width] + ["%r" % v for v in mean] + ["%r" % v for v in std] + ["pre_%s.npy" % name]))
    with open(os.path.join(OUT, "preprocess_cases.txt"), "w") as f:
        f.write("# name source source_format model_format min_size max_size size_divisibility resized_h resized_w "
                "orig_h orig_w mean0 mean1 mean2 std0 std1 std2 expected\n")
        f.write("\n".join(lines) + "\n")


def npy_values(n, kind):
    i = np.arange(n, dtype=np.int64)
    v = (i * 37) % 101 - 50
    if kind == "f":
        return v * 0.25
    return v


def make_npy():
    # A(i) = ((i * 37) % 101 - 50), times 0.25 for floats; bool: i % 3 == 0; u1: (i * 37) % 256.
    shape = (2, 3, 4)
    n = int(np.prod(shape))
    idx = np.arange(n, dtype=np.int64)
    arrays = {
        "f4": (npy_values(n, "f").astype("<f4")),
        "f8": (npy_values(n, "f").astype("<f8")),
        "f2": (npy_values(n, "f").astype("<f2")),
        "i8": (npy_values(n, "i").astype("<i8") * 1000000007),
        "i4": (npy_values(n, "i").astype("<i4") * 1000003),
        "i2": (npy_values(n, "i").astype("<i2") * 601),
        "i1": (npy_values(n, "i").astype("i1")),
        "u1": ((idx * 37) % 256).astype("u1"),
        "b1": (idx % 3 == 0),
    }
    for code, a in arrays.items():
        a = a.reshape(shape)
        save("npy_%s.npy" % code, a)
        save("npy_%s_fortran.npy" % code, np.asfortranarray(a))
        if a.dtype.itemsize > 1:
            save("npy_%s_big.npy" % code, a.astype(a.dtype.newbyteorder(">")))
    for version in [(1, 0), (2, 0), (3, 0)]:
        with open(os.path.join(OUT, "npy_f4_v%d.npy" % version[0]), "wb") as f:
            np.lib.format.write_array(f, arrays["f4"].reshape(shape), version=version)
    save("npy_scalar_f8.npy", np.array(-2.75, dtype="<f8"))
    save("npy_empty_f4.npy", np.zeros((0, 3), dtype="<f4"))
    save("npy_vector_i4.npy", (npy_values(5, "i") * 3).astype("<i4"))
    save("npy_fortran_2x5_f4.npy", np.asfortranarray(npy_values(10, "f").astype("<f4").reshape(2, 5)))
    save("npy_u2.npy", np.arange(4, dtype="<u2"))
    save("npy_c8.npy", np.arange(4, dtype="<c8"))
    save("npy_structured.npy", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d2", default="/work/d2", help="detectron2 checkout (the folder holding detectron2/)")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    T, ImageList = import_detectron2(args.d2)
    rng = np.random.default_rng(20240611)
    make_resize(rng)
    make_shapes(T)
    make_preprocess(rng, T, ImageList)
    make_npy()
    with open(os.path.join(OUT, "info.txt"), "w") as f:
        f.write("Pillow %s\nnumpy %s\n" % (PIL.__version__, np.__version__))
    print("wrote", OUT, "Pillow", PIL.__version__, "numpy", np.__version__)


if __name__ == "__main__":
    main()
