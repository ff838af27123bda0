#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Generates the reference data of tests/backbone/config_test.cpp with detectron2's own config code.

Run from the repository root:

    /work/venv-d2/bin/python tests/data/make_config.py --detectron2 /work/d2

Needs yacs, fvcore and PyYAML; detectron2 need not be built or installed: this script loads
detectron2/config/{config,defaults,compat}.py from the checkout with a stand-in for
detectron2.utils.file_io (local files only). It writes, under tests/data/config/:
  dumps/*.yaml     get_cfg() + merge_from_file(...) + dump() for real detectron2 model-zoo configs
                   (COCO Mask R-CNN R-50-FPN 3x, cascade X-152 dconv with a project-like section
                   added) and for the test inputs (chain/, compat/)
  shipped/*.yaml   the same for every config in configs/ (proves detectron2 loads them)
  expected.json    values and types after merge_from_list overrides, and the exact messages
                   yacs/fvcore/detectron2 raise for the error inputs (errors/*.yaml, bad lists)
The YAML inputs under chain/, compat/ and errors/ are hand-written and committed.
"""
import argparse
import glob
import importlib
import json
import logging
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "config")
REPO = os.path.dirname(os.path.dirname(HERE))


def load_detectron2_config(d2_root):
    """detectron2.config.{config,defaults,compat} without detectron2/__init__ and its imports."""
    pkg = types.ModuleType("detectron2")
    pkg.__path__ = [os.path.join(d2_root, "detectron2")]
    utils = types.ModuleType("detectron2.utils")
    utils.__path__ = []
    file_io = types.ModuleType("detectron2.utils.file_io")

    class LocalPathManager:
        @staticmethod
        def isfile(path):
            return os.path.isfile(path)

        @staticmethod
        def open(path, mode="r"):
            return open(path, mode)

    file_io.PathManager = LocalPathManager
    cfg_pkg = types.ModuleType("detectron2.config")
    cfg_pkg.__path__ = [os.path.join(d2_root, "detectron2", "config")]
    sys.modules.update({"detectron2": pkg, "detectron2.utils": utils,
                        "detectron2.utils.file_io": file_io, "detectron2.config": cfg_pkg})
    config = importlib.import_module("detectron2.config.config")
    importlib.import_module("detectron2.config.defaults")
    importlib.import_module("detectron2.config.compat")
    return config


def error_message(fn):
    try:
        fn()
    except (AssertionError, KeyError, ValueError) as e:
        return type(e).__name__, e.args[0]
    raise RuntimeError("expected an error")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detectron2", required=True, help="detectron2 source checkout")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # detectron2's "has no VERSION" notices
    config = load_detectron2_config(os.path.abspath(args.detectron2))
    get_cfg, CN = config.get_cfg, config.CfgNode
    os.chdir(OUT)  # every path below and in expected.json is relative to tests/data/config
    expected = {"dumps": [], "list_cases": [], "list_errors": [], "file_errors": []}

    def write(path, text):
        with open(path, "w") as f:
            f.write(text)

    # 1. Real detectron2 configs, merged and dumped by detectron2.
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(args.detectron2, "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    write("dumps/d2_mask_rcnn_R_50_FPN_3x.yaml", cfg.dump())
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(args.detectron2, "configs/Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml"))
    # A section added by a project (as PointRend's add_pointrend_config does), written here.
    cfg.MODEL.POINT_HEAD = CN()
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 80
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ("p2",)
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 5
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    cfg.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK = False
    cfg.MODEL.POINT_HEAD.NAME = "StandardPointHead"
    write("dumps/d2_cascade_X_152_dconv_with_project_section.yaml", cfg.dump())
    # Those full dumps loaded again by detectron2 (a dict-based project section needs
    # new keys allowed in detectron2; this library accepts it as an unread section).
    for name in ["d2_mask_rcnn_R_50_FPN_3x", "d2_cascade_X_152_dconv_with_project_section"]:
        cfg = get_cfg()
        if "project" in name:
            cfg.MODEL.POINT_HEAD = CN(new_allowed=True)
        cfg.merge_from_file("dumps/%s.yaml" % name)
        write("dumps/%s__reloaded.yaml" % name, cfg.dump())
        expected["dumps"].append({"input": "dumps/%s.yaml" % name, "dump": "dumps/%s__reloaded.yaml" % name})

    # 2. Test inputs merged by detectron2.
    for path in ["yaml_typing.yaml", "yaml_anchors.yaml", "long_strings.yaml", "unused_sections_d2.yaml", "chain/top.yaml", "chain/list_base.yaml", "chain/dotdot_base.yaml",
                 "compat/v1_explicit.yaml", "compat/v1_guessed.yaml", "compat/v1_retinanet.yaml",
                 "compat/no_version_v2.yaml"]:
        cfg = get_cfg()
        if path == "yaml_anchors.yaml":  # its anchor holders are top-level keys of their own
            cfg.set_new_allowed(True)
        cfg.merge_from_file(path)
        out = "dumps/" + path.replace("/", "__")
        write(out, cfg.dump())
        expected["dumps"].append({"input": path, "dump": out})

    # 3. The shipped configs.
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))):
        cfg = get_cfg()
        cfg.merge_from_file(path)
        name = os.path.basename(path)
        write("shipped/" + name, cfg.dump())

    # 4. merge_from_list: value and type after each override.
    list_cases = [
        ("MODEL.RESNETS.DEPTH", "101"),
        ("MODEL.RESNETS.DEPTH", "0x22"),
        ("MODEL.RESNETS.DEPTH", " 1_52"),
        ("MODEL.RESNETS.NUM_GROUPS", "-32"),
        ("MODEL.RESNETS.STRIDE_IN_1X1", "False"),
        ("MODEL.RESNETS.STRIDE_IN_1X1", "True"),
        ("MODEL.RESNETS.NORM", "GN"),
        ("MODEL.RESNETS.NORM", "'SyncBN'"),
        ("MODEL.RESNETS.NORM", "\"BN\""),
        ("MODEL.RESNETS.NORM", ""),
        ("MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']"),
        ("MODEL.RESNETS.OUT_FEATURES", "('res5',)"),
        ("MODEL.RESNETS.OUT_FEATURES", "[]"),
        ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]"),
        ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", "False, True, True, True"),
        ("MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]"),
        ("MODEL.PIXEL_MEAN", "(1, 2, 3)"),
        ("MODEL.PIXEL_STD", "[1e-3, 1.5e+2, .5, 5., 1E20, 1e-07, 123456789.125]"),
        ("MODEL.PIXEL_STD", "[\n  57.375,\n  57.12,  # comment\n  58.395,\n]"),
        ("MODEL.WEIGHTS", "/models/R-50.pkl"),
        ("MODEL.WEIGHTS", "detectron2://ImageNetPretrained/MSRA/R-50.pkl"),
        ("MODEL.WEIGHTS", "'it''s' \"here\""),
        ("MODEL.WEIGHTS", "r'C:\\models\\x.pkl'"),
        ("MODEL.WEIGHTS", "'tab\\there\\x41\\u00e9'"),
        ("MODEL.WEIGHTS", "None"),
        ("MODEL.DEVICE", "cpu"),
        ("MODEL.DEVICE", "cuda:1"),
        ("MODEL.DEVICE", "1 + 2"),
        ("INPUT.FORMAT", "RGB"),
        ("INPUT.MIN_SIZE_TRAIN", "[640, 800]"),
        ("INPUT.MIN_SIZE_TRAIN", "(800,)"),
        ("INPUT.MIN_SIZE_TRAIN", "(640, 672, 704)"),
        ("INPUT.MIN_SIZE_TEST", "0"),
        ("INPUT.MAX_SIZE_TEST", "1_333"),
        ("INPUT.CROP.ENABLED", "True"),
        ("INPUT.CROP.SIZE", "[0.5, [1, 2], (3,), 'x', None]"),
        ("MODEL.BACKBONE.FREEZE_AT", "0"),
        ("MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"),
        ("VERSION", "2"),
        ("SOLVER.BASE_LR", "0.02"),
        ("SOLVER.STEPS", "(1000, 2000)"),
        ("SOLVER.WEIGHT_DECAY_BIAS", "0.0"),
        ("DATASETS.TRAIN", "('coco_2017_train',)"),
        ("MODEL.ROI_HEADS.NUM_CLASSES", "1"),
    ]
    cfg = get_cfg()
    for key, value in list_cases:
        one = get_cfg()
        one.merge_from_list([key, value])
        node = one
        for part in key.split("."):
            node = node[part]
        expected["list_cases"].append({"overrides": [key, value], "key": key,
                                       "repr": repr(node), "type": str(type(node))})
        cfg.merge_from_list([key, value])
    write("dumps/list_overrides.yaml", cfg.dump())
    expected["list_all_overrides"] = [x for kv in list_cases for x in kv]
    expected["list_all_dump"] = "dumps/list_overrides.yaml"

    # 5. merge_from_list errors.
    list_errors = [
        ["MODEL.RESNETS.DEPTH", "101", "MODEL.RESNETS.NORM"],
        ["MODEL.RESNETS.DEPTH"],
        ["_BASE_", "x.yaml"],
        ["MODEL.RESNETS.FOO", "1"],
        ["MODEL.RESNETS.FOO.BAR", "1"],
        ["MODEL.BACKBONE.FREEZE", "1"],
        ["INPUT.FOO", "1"],
        ["INPUT.CROP.FOO", "1"],
        ["MODEL.RESNETS.DEPTH", "abc"],
        ["MODEL.RESNETS.DEPTH", "50.0"],
        ["MODEL.RESNETS.DEPTH", "True"],
        ["MODEL.RESNETS.DEPTH", "[50]"],
        ["MODEL.RESNETS.STRIDE_IN_1X1", "1"],
        ["MODEL.RESNETS.STRIDE_IN_1X1", "false"],
        ["MODEL.RESNETS.OUT_FEATURES", "res4"],
        ["MODEL.RESNETS.OUT_FEATURES", "[res4, res5]"],
        ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "True"],
        ["MODEL.RESNETS", "50"],
        ["MODEL.RESNETS", "{'DEPTH': 50}"],
        ["MODEL.PIXEL_MEAN", "103.53"],
        ["MODEL.PIXEL_STD", "'1, 1, 1'"],
        ["MODEL.WEIGHTS", "5"],
        ["MODEL.WEIGHTS", "[1.5, 'a']"],
        ["MODEL.DEVICE", "0"],
        ["INPUT.FORMAT", "1"],
        ["INPUT.MIN_SIZE_TRAIN", "800"],
        ["INPUT.CROP", "True"],
        ["VERSION", "abc"],
        ["VERSION", "2.0"],
    ]
    for overrides in list_errors:
        kind, message = error_message(lambda: get_cfg().merge_from_list(overrides))
        expected["list_errors"].append({"overrides": overrides, "error": kind, "message": message})

    # 6. File errors with a detectron2 message.
    for path in sorted(glob.glob("errors/*.yaml")):
        name = os.path.basename(path)
        if name in ("bad_yaml.yaml", "cycle_a.yaml", "cycle_b.yaml", "self_cycle.yaml",
                    "url_base.yaml", "missing_base.yaml", "empty.yaml"):
            continue  # detectron2 fails differently (YAML/recursion/download errors): no reference
        kind, message = error_message(lambda: get_cfg().merge_from_file(path))
        expected["file_errors"].append({"file": path, "error": kind, "message": message})
    kind, message = error_message(lambda: get_cfg().merge_from_file("errors/no_such_file.yaml"))
    expected["file_errors"].append({"file": "errors/no_such_file.yaml", "error": kind, "message": message})

    # 7. The Python pieces yacs relies on, case by case: ast.literal_eval (through yacs'
    # _decode_cfg_value: a text that is no literal comes back unchanged), repr(float), and
    # yaml.safe_load of one plain scalar.
    from yacs.config import CfgNode as YacsNode
    import yaml

    literal_texts = [
        "1", "-1", "+7", "0", "00", "010", "1_000", "0x1F", "0o17", "0b101", "1.5", "-2.5e-3", ".5", "5.",
        "1e5", "1E+05", "1e400", "-1e400", "True", "False", "None", "true", "none", "'a'", '"b"',
        "'a' 'b'", r"r'\d'", "u'x'", "b'x'", "f'x'", r"'\n'", r"'\x41\u00e9'", "'''t'''",
        "[]", "()", "{}", "[1, 2,]", "(1,)", "(1)", "1, 2", "1,", "[1, (2, 3), [4]]", "{'a': 1, 2: [3]}",
        "{1, 2}", "--1", "-True", "1 + 2", "1j", "abc", "a.b", "res4", "[res4]", "cuda:0",
        "/path/to/x.pkl", "", " ", "  42", "\t3", "42  ", "42 # c", "# c", "[1,\n 2]", "1\n2",
        "9223372036854775807", "1__0", "1_", "0_7", "0x", "1e", "1.2.3", "[1, 2", "'unterminated",
    ]
    expected["literal_eval"] = []
    for text in literal_texts:
        value = YacsNode._decode_cfg_value(text)
        literal = not (isinstance(value, str) and value == text)
        expected["literal_eval"].append({"text": text, "literal": literal,
                                         "repr": repr(value) if literal else None,
                                         "type": type(value).__name__})
    floats = [0.1, 1 / 3, 2 / 3, 1e16, 1e15, 123456789012345678.0, 1e-4, 1e-5, 5e-324,
              1.7976931348623157e308, -0.0, 2.5e-7, 100.0, 0.30000000000000004, 1e22, 1.5e-10,
              9007199254740993.0, 123.456, -7.0, 4.35, 57.12]
    expected["float_repr"] = [[f.hex(), repr(f)] for f in floats]
    scalars = ["yes", "No", "ON", "off", "y", "n", "True", "TRUE", "tRue", "~", "null", "NULL", "nUll",
               "1", "-1", "+1", "0", "010", "0o10", "0x1A", "0b11", "1_000", "1:30", "-1:30", "1.5", "1.",
               ".5", "1e5", "1.0e5", "1.0e+5", "1.0E-5", ".inf", "-.Inf", ".NaN", "1:30.5", "abc", "a b",
               "2001-12-14"]
    expected["yaml_scalars"] = []
    for text in scalars:
        value = yaml.safe_load("v: " + text)["v"]
        text_repr = None if hasattr(value, "isoformat") else ("nan" if value != value else repr(value))
        expected["yaml_scalars"].append({"text": text, "type": type(value).__name__, "repr": text_repr})

    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
