#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Every FPN config of a detectron2 checkout against backbone-infer (not run in CI: it builds
full-size networks, e.g. X-152-32x8d, and takes minutes).

For every YAML under <detectron2>/configs whose MODEL.BACKBONE.NAME (through _BASE_) is
build_resnet_fpn_backbone or build_retinanet_resnet_fpn_backbone, the script builds detectron2's
own backbone from the file (get_cfg() + merge_from_file, as the file is), randomises every parameter
and buffer (seeded: norm statistics, biases, deformable offsets as tests/data/make_goldens.py does),
runs a small input padded to 32, saves the weights as a detectron2 model file ("backbone." names) and
runs

    <build>/bin/backbone-infer --config-file <the yaml, unchanged> --weights w.pth --input x.npy --engine E

for each engine, comparing every p-level: max |out - ref| <= 1e-4 * max |ref| (2e-3 with deformable
stages). With --float64, detectron2 also runs in float64: a level that misses the bound against the
float32 reference but is as close to the float64 result as detectron2's own float32 run (deep
deformable networks with random offsets, e.g. X-152 dconv, amplify float32 rounding past 2e-3) passes,
and the note says so. Prints a table (config, engine, max relative error, pass/fail) and a summary.
LazyConfig .py files and YAMLs whose _BASE_ chain leaves configs/ are listed as skipped with the reason.

    <venv with detectron2's deps>/bin/python tests/data/check_d2_fpn_configs.py --detectron2 <detectron2 checkout> --build build \
        [--engines libtorch,onednn,opencv] [--filter REGEX] [--threads N]
"""

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402
import make_fpn_goldens as mf  # noqa: E402

FPN_BUILDERS = ("build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone")
INPUT_SHAPE = (1, 3, 64, 96)


def base_chain(path, root):
    """The files of the _BASE_ chain of `path` (itself first); raises ValueError when one lies
    outside `root` or is missing."""
    chain = []
    while path:
        real = os.path.realpath(path)
        if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
            raise ValueError(f"_BASE_ {os.path.relpath(real, root)} is outside configs/")
        if not os.path.isfile(real):
            raise ValueError(f"_BASE_ {os.path.relpath(real, root)} does not exist")
        chain.append(real)
        # (detectron2's YAMLs may hold !!python tags: only the top-level _BASE_ line is read here)
        with open(real) as f:
            m = re.search(r"^_BASE_:\s*(.+?)\s*$", f.read(), re.M)
        base = m.group(1).strip("'\"") if m else None
        if base is None:
            break
        if base.startswith(("~", "/")) or "://" in base:
            raise ValueError(f"_BASE_ {base} is not a file of configs/")
        path = os.path.join(os.path.dirname(real), base)
    return chain


def backbone_key(cfg):
    """What decides the backbone's structure (configs sharing it share weights and references)."""
    return json.dumps({"name": cfg.MODEL.BACKBONE.NAME, "resnets": dict(cfg.MODEL.RESNETS),
                       "fpn": dict(cfg.MODEL.FPN)}, sort_keys=True, default=str)


def make_reference(cfg, key, work, float64=False):
    """detectron2's backbone from `cfg`, randomised; writes w.pth and x.npy, returns (refs, tolerance,
    deformable, the references' own rounding error: max over levels of |f32 - f64| / max |f64|, or None)."""
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100003
    model = mf.syncbn_as_bn(mf.build(cfg))
    mg.randomize_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(INPUT_SHAPE, generator=g)
    mg.calibrate_offsets_(model, x)
    deformable = any(n.endswith("conv2_offset") for n, _ in model.named_modules())
    refs = mf.run(model, x)
    torch.save({"model": collections.OrderedDict(("backbone." + k, v) for k, v in model.state_dict().items())},
               os.path.join(work, "w.pth"))
    np.save(os.path.join(work, "x.npy"), x.numpy())
    own, ref64 = None, None
    if float64:
        r64 = mf.run(model.double(), x.double())
        own = max(float((refs[k].double() - v).abs().max() / v.abs().max()) for k, v in r64.items())
        ref64 = {k: v.numpy() for k, v in r64.items()}
    return {k: v.numpy() for k, v in refs.items()}, (2e-3 if deformable else 1e-4), deformable, (own, ref64)


def run_infer(infer, yaml_path, work, engine, threads):
    out = os.path.join(work, "out-" + engine)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [infer, "--config-file", yaml_path, "--weights", os.path.join(work, "w.pth"), "--input",
           os.path.join(work, "x.npy"), "--engine", engine, "--threads", str(threads), "--output-dir", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = [line for line in (p.stderr + p.stdout).strip().splitlines() if line.strip()]
        return None, (lines[-1] if lines else f"exit status {p.returncode}")
    return out, None


EVAL_TAG = re.compile(r"!!python/object/apply:eval\s*\[\s*(['\"])(.*?)\1\s*\]")


def patched_configs(root, work):
    """A copy of configs/ whose !!python/object/apply:eval nodes (detectron2's Base-RetinaNet.yaml
    writes MODEL.ANCHOR_GENERATOR.SIZES so) hold the value Python's eval gives, as plain YAML: to
    compare the numbers of a config that the loader refuses for that tag alone."""
    dst = os.path.join(work, "configs-eval-tags-evaluated")
    if os.path.isdir(dst):
        return dst
    shutil.copytree(root, dst)
    for dirpath, _, files in os.walk(dst):
        for fn in files:
            if fn.endswith(".yaml"):
                path = os.path.join(dirpath, fn)
                with open(path) as f:
                    text = f.read()
                new = EVAL_TAG.sub(lambda m: json.dumps(eval(m.group(2))), text)  # noqa: S307 (detectron2's own file)
                if new != text:
                    with open(path, "w") as f:
                        f.write(new)
    return dst


def compare(out, refs, tol):
    worst, problems = 0.0, []
    for k, ref in refs.items():
        path = os.path.join(out, f"{k}.npy")
        if not os.path.isfile(path):
            problems.append(f"{k} not written")
            continue
        y = np.load(path)
        if y.shape != ref.shape:
            problems.append(f"{k} shape {y.shape} != {ref.shape}")
            continue
        if not np.isfinite(ref).all():
            problems.append(f"{k}: detectron2's reference is not finite")
            continue
        if not np.abs(ref).max() > 0:
            problems.append(f"{k}: detectron2's reference is all zeros")
            continue
        if not np.isfinite(y).all():
            problems.append(f"{k}: output not finite")
            continue
        err = float(np.abs(y.astype(np.float64) - ref).max() / np.abs(ref).max())
        worst = max(worst, err)
        if err > tol:
            problems.append(f"{k} rel err {err:.2e} > {tol:g}")
    extra = sorted(set(f[:-4] for f in os.listdir(out) if f.endswith(".npy")) - set(refs))
    if extra:
        problems.append("unexpected outputs " + ", ".join(extra))
    return worst, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectron2", required=True, help="detectron2 checkout (holds configs/)")
    ap.add_argument("--build", required=True, help="this project's build folder (holds bin/backbone-infer)")
    ap.add_argument("--engines", default="libtorch,onednn,opencv")
    ap.add_argument("--filter", default="", help="only configs whose path matches this regex")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--offset-px", type=float, default=mg.OFFSET_TARGET,
                    help="std of the random deformable offsets in pixels (make_goldens' calibration; default "
                         "%(default)s); the bias part is a quarter of it")
    ap.add_argument("--float64", action="store_true",
                    help="also run detectron2 in float64 and report the float32 references' own error")
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.threads))
    mg.OFFSET_TARGET, mg.OFFSET_B_STD = args.offset_px, args.offset_px / 4
    mf.install(args.detectron2)
    infer = os.path.join(os.path.abspath(args.build), "bin", "backbone-infer")
    if not os.access(infer, os.X_OK):
        sys.exit(f"{infer}: not found (build the backbone-infer target)")
    root = os.path.join(os.path.abspath(args.detectron2), "configs")
    engines = [e for e in args.engines.split(",") if e]

    skipped, candidates = [], []
    for dirpath, _, files in sorted(os.walk(root)):
        for fn in sorted(files):
            path = os.path.join(dirpath, fn)
            rel = os.path.relpath(path, root)
            if args.filter and not re.search(args.filter, rel):
                continue
            if fn.endswith(".py"):
                skipped.append((rel, "LazyConfig (.py), not a YAML config"))
                continue
            if not fn.endswith(".yaml"):
                continue
            try:
                base_chain(path, root)
            except ValueError as e:
                skipped.append((rel, str(e)))
                continue
            cfg = mg.D2.get_cfg()
            try:
                cfg.merge_from_file(path)
            except Exception as e:  # noqa: BLE001 (detectron2 itself cannot load it)
                skipped.append((rel, f"detectron2's get_cfg().merge_from_file fails: {type(e).__name__}: {e}"))
                continue
            if cfg.MODEL.BACKBONE.NAME not in FPN_BUILDERS:
                continue
            candidates.append((backbone_key(cfg), rel, path, cfg))
    candidates.sort(key=lambda c: (c[0], c[1]))

    rows, t0 = [], time.time()
    with tempfile.TemporaryDirectory(prefix="d2-fpn-configs-") as work:
        current_key, refs, tol, deformable, own, ref64 = None, None, None, False, None, None
        for key, rel, path, cfg in candidates:
            if key != current_key:
                try:
                    refs, tol, deformable, (own, ref64) = make_reference(cfg, key, work, args.float64)
                    if own is not None:
                        print(f"  {rel}: detectron2 float32 vs float64: {own:.2e}", file=sys.stderr, flush=True)
                    current_key = key
                except Exception as e:  # noqa: BLE001
                    for engine in engines:
                        rows.append((rel, engine, None, False, f"detectron2 cannot build it: {type(e).__name__}: {e}"))
                    current_key = None
                    continue
            for engine in engines:
                out, err = run_infer(infer, path, work, engine, args.threads)
                if err and "!!python/object/apply:eval" in err:
                    # Refused for the tag alone: the numbers with the tag's value evaluated, for the table.
                    out, err2 = run_infer(infer, os.path.join(patched_configs(root, work), rel), work, engine,
                                          args.threads)
                    m = re.search(r"([^/ ]+\.yaml): key (\S+): the YAML tag", err)
                    why = ("the loader refuses !!python/object/apply:eval" +
                           (f" ({m.group(2)} in {m.group(1)})" if m else ""))
                    if err2:
                        rows.append((rel, engine, None, False, why + "; with the tag evaluated: " + err2))
                    else:
                        worst, problems = compare(out, refs, tol)
                        rows.append((rel, engine, worst, False, why + "; with the tag evaluated: "
                                     + ("; ".join(problems) if problems else "numbers match")))
                    continue
                if err:
                    rows.append((rel, engine, None, False, err))
                    continue
                worst, problems = compare(out, refs, tol)
                note = "; ".join(problems)
                if problems and ref64 is not None:
                    # As close to the exact (float64) result as detectron2's own float32 run is: passes.
                    w64, p64 = compare(out, ref64, max(tol, own))
                    note += (f"; vs detectron2 in float64: {w64:.2e} (detectron2's float32 vs float64: {own:.2e})"
                             + ("; as accurate as detectron2's float32: pass" if not p64 else ""))
                    problems = p64
                rows.append((rel, engine, worst, not problems,
                             note + (" (deformable: tol 2e-3)" if deformable and not problems else "")))
            print(f"  [{time.time() - t0:6.0f}s] {rel}: " + ", ".join(
                f"{r[1]} {'pass' if r[3] else 'FAIL'}" for r in rows[-len(engines):]), file=sys.stderr, flush=True)

    w = max([len(r[0]) for r in rows] + [6])
    print(f"{'config':{w}s}  {'engine':8s}  {'max rel err':>11s}  result")
    for rel, engine, err, ok, note in rows:
        e = f"{err:.2e}" if err is not None else "-"
        print(f"{rel:{w}s}  {engine:8s}  {e:>11s}  {'pass' if ok else 'FAIL'}{'  ' + note if note else ''}")
    print()
    for rel, why in skipped:
        print(f"skipped {rel}: {why}")
    print()
    configs = sorted(set(r[0] for r in rows))
    print(f"{len(configs)} FPN configs ({len(set(c[0] for c in candidates))} distinct backbones), "
          f"{len(skipped)} files skipped, {time.time() - t0:.0f} s")
    for engine in engines:
        er = [r for r in rows if r[1] == engine]
        print(f"  {engine}: {sum(r[3] for r in er)}/{len(er)} pass"
              + (f"; worst passing rel err {max(r[2] for r in er if r[3]):.2e}" if any(r[3] for r in er) else ""))
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
