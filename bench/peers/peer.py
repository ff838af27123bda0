#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The Python side of backbone-bench (tools/bench): the shared weights, the ONNX export and the
Python peers.

  peer.py prepare --depth 50 [--fpn] --seed 0 --out W.pth
      torchvision's resnet<depth> (STRIDE_IN_1X1 False in detectron2's terms), seeded random
      initialisation plus random BatchNorm affine parameters and running statistics (so that
      folding BN into the convolutions matters), saved as a torchvision state dict without "fc.*".
      With --fpn, also detectron2's FPN on it (build_resnet_fpn_backbone with FPN.IN_FEATURES
      res2..res5, OUT_CHANNELS 256, NORM "", FUSE_TYPE sum): "fpn_lateral{2..5}.*" and
      "fpn_output{2..5}.*" as detectron2's FPN module names them, weights by c2_xavier_fill
      (kaiming_uniform_ with a=1) and seeded random biases (so that they matter).
  peer.py export-onnx --depth 50 [--fpn] --weights W.pth --height H --width W --out X.onnx [--opset 13]
      exports the body (stem .. layer4, outputs res2..res5; with --fpn the FPN's p2..p6) for one
      fixed input size, in eval mode with constant folding (BN folded by the exporter), so the
      graph has static shapes.
  peer.py worker --runner NAME --depth 50 [--fpn] --weights W.pth --onnx X.onnx --input X.npy --threads N [--device cuda:N]
      one timed runner (see RUNNERS), driven by backbone-bench over a line protocol: commands on
      stdin, replies on file descriptor --reply-fd (default 3) so that whatever a library prints
      on stdout cannot corrupt them.

Protocol (one line each): the worker first answers "ready <json>" ({"describe": ...}),
"unsupported <why>" (the runner does not run on this machine) or "error <message>"; then, per
command:
  check DIR  -> runs the input once, writes DIR/<level>.npy (float32, NCHW), answers "ok"
  run N      -> runs the input N times, answers "times <ms> <ms> ..." (each frame timed alone; the
                CUDA runners synchronise the device after each frame, inside its time)
  quit       -> exits
"""
import argparse
import json
import os
import sys
import time
import traceback

LEVELS = ["res2", "res3", "res4", "res5"]
FPN_LEVELS = ["p2", "p3", "p4", "p5", "p6"]
FPN_OUT_CHANNELS = 256
# openvino-bf16: OpenVINO with INFERENCE_PRECISION_HINT bf16 (backbone-bench starts it only on CPUs
# with AVX512_BF16 or AMX; where OpenVINO still compiles f32, the worker answers "unsupported").
RUNNERS = ["torch-eager", "torch-compile", "onnxruntime", "openvino", "openvino-bf16", "opencv"]
# PyTorch eager on a CUDA device (--device cuda:N), backbone-bench's GPU section:
#   torch-cuda-fp32         float32 with PyTorch's defaults (cuDNN may use TF32: torch.backends.cudnn.allow_tf32
#                           is True by default)
#   torch-cuda-fp32-notf32  float32, torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
#   torch-cuda-fp16-cl      model.half().to(memory_format=torch.channels_last), the input likewise
CUDA_RUNNERS = ["torch-cuda-fp32", "torch-cuda-fp32-notf32", "torch-cuda-fp16-cl"]


def torchvision_resnet(depth):
    import torchvision

    ctor = getattr(torchvision.models, f"resnet{depth}", None)
    if ctor is None:
        raise SystemExit(f"peer.py: no torchvision resnet{depth} (expected 18, 34, 50, 101 or 152)")
    try:
        return ctor(weights=None)
    except TypeError:  # torchvision < 0.13
        return ctor(pretrained=False)


def make_body(torch, model):
    class Body(torch.nn.Module):
        """torchvision's ResNet up to layer4, returning every stage: detectron2's res2..res5."""

        def __init__(self, m):
            super().__init__()
            self.conv1, self.bn1, self.relu, self.maxpool = m.conv1, m.bn1, m.relu, m.maxpool
            self.layer1, self.layer2, self.layer3, self.layer4 = m.layer1, m.layer2, m.layer3, m.layer4

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            r2 = self.layer1(x)
            r3 = self.layer2(r2)
            r4 = self.layer3(r3)
            r5 = self.layer4(r4)
            return r2, r3, r4, r5

    return Body(model).eval()


def add_fpn(torch, model):
    """detectron2's FPN (modeling/backbone/fpn.py) with build_resnet_fpn_backbone's settings on
    torchvision's resnet, in plain torch: FPN.IN_FEATURES res2..res5, OUT_CHANNELS 256, NORM "" (the
    convolutions have biases), FUSE_TYPE "sum", top block LastLevelMaxPool. Its layers are
    attributes of `model` named as detectron2 registers them (fpn_lateral2 .. fpn_output5), so the
    state dict holds torchvision's names and detectron2's FPN names side by side."""
    in_channels = [model.layer1[-1].conv3.out_channels if hasattr(model.layer1[-1], "conv3")
                   else model.layer1[-1].conv2.out_channels]
    for layer in (model.layer2, model.layer3, model.layer4):
        block = layer[-1]
        in_channels.append(block.conv3.out_channels if hasattr(block, "conv3") else block.conv2.out_channels)
    for stage, c in zip(range(2, 6), in_channels):
        setattr(model, f"fpn_lateral{stage}", torch.nn.Conv2d(c, FPN_OUT_CHANNELS, kernel_size=1, bias=True))
        setattr(model, f"fpn_output{stage}",
                torch.nn.Conv2d(FPN_OUT_CHANNELS, FPN_OUT_CHANNELS, kernel_size=3, stride=1, padding=1, bias=True))
    return model


def make_fpn_body(torch, model):
    import torch.nn.functional as F

    class FpnBody(torch.nn.Module):
        """torchvision's ResNet up to layer4 and detectron2's FPN.forward on res2..res5: from the
        coarsest level, prev = lateral(C) + nearest 2x upsample of prev, out = output(prev); p6 =
        max_pool2d(p5, kernel_size=1, stride=2, padding=0) (LastLevelMaxPool)."""

        def __init__(self, m):
            super().__init__()
            self.conv1, self.bn1, self.relu, self.maxpool = m.conv1, m.bn1, m.relu, m.maxpool
            self.layer1, self.layer2, self.layer3, self.layer4 = m.layer1, m.layer2, m.layer3, m.layer4
            self.laterals = torch.nn.ModuleList([getattr(m, f"fpn_lateral{s}") for s in range(2, 6)])
            self.outputs = torch.nn.ModuleList([getattr(m, f"fpn_output{s}") for s in range(2, 6)])

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            r2 = self.layer1(x)
            r3 = self.layer2(r2)
            r4 = self.layer3(r3)
            r5 = self.layer4(r4)
            feats = [r2, r3, r4, r5]
            prev = self.laterals[3](r5)
            results = [self.outputs[3](prev)]
            for i in (2, 1, 0):
                top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
                prev = self.laterals[i](feats[i]) + top_down
                results.insert(0, self.outputs[i](prev))
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
            return tuple(results)

    return FpnBody(model).eval()


def load_body(depth, weights, fpn=False):
    import torch

    model = torchvision_resnet(depth)
    if fpn:
        add_fpn(torch, model)
    state = torch.load(weights, map_location="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        what = f"resnet{depth}{' with an FPN' if fpn else ''}"
        raise SystemExit(f"peer.py: {weights} does not fit {what}: missing {missing}, unexpected {unexpected}")
    return make_fpn_body(torch, model) if fpn else make_body(torch, model)


def levels(a):
    return FPN_LEVELS if getattr(a, "fpn", False) else LEVELS


def cmd_prepare(a):
    import torch

    torch.manual_seed(a.seed)
    model = torchvision_resnet(a.depth)
    g = torch.Generator().manual_seed(a.seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    if a.fpn:
        add_fpn(torch, model)
        with torch.no_grad():
            for stage in range(2, 6):
                for kind in ("lateral", "output"):
                    conv = getattr(model, f"fpn_{kind}{stage}")
                    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                    bound = (3.0 / fan_in) ** 0.5  # c2_xavier_fill: kaiming_uniform_(a=1)
                    conv.weight.copy_((torch.rand(conv.weight.shape, generator=g) * 2 - 1) * bound)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    tmp = a.out + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, a.out)
    print(f"peer.py: wrote {a.out} (torchvision resnet{a.depth}{' with an FPN' if a.fpn else ''}, seed {a.seed}, "
          f"{len(state)} entries)")


def cmd_export_onnx(a):
    import torch

    body = load_body(a.depth, a.weights, a.fpn)
    x = torch.zeros(1, 3, a.height, a.width)
    tmp = a.out + ".tmp"
    kwargs = dict(opset_version=a.opset, do_constant_folding=True, input_names=["images"], output_names=levels(a))
    if hasattr(torch.onnx, "TrainingMode"):
        kwargs["training"] = torch.onnx.TrainingMode.EVAL
    with torch.no_grad():
        torch.onnx.export(body, x, tmp, **kwargs)
    os.replace(tmp, a.out)
    print(f"peer.py: wrote {a.out} (opset {a.opset}, input 1x3x{a.height}x{a.width}, torch {torch.__version__})")


def fpn_note(a):
    return " + detectron2's FPN (p2..p6, plain torch)" if getattr(a, "fpn", False) else ""


class Runner:
    """One way of running the network: load once, then forward(x) -> list of 4 arrays/tensors."""

    def __init__(self, a, x):
        self.a = a
        self.x = x  # numpy float32 NCHW

    def to_numpy(self, outs):
        import numpy as np

        return [np.ascontiguousarray(np.asarray(o, dtype=np.float32)) for o in outs]


class TorchRunner(Runner):
    def __init__(self, a, x, compiled):
        super().__init__(a, x)
        import torch

        torch.set_num_threads(a.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.torch = torch
        self.body = load_body(a.depth, a.weights, a.fpn)
        self.fn = self.body
        if compiled:
            if not hasattr(torch, "compile"):
                raise RuntimeError(f"torch {torch.__version__} has no torch.compile")
            self.fn = torch.compile(self.body)
        self.tx = torch.from_numpy(x)
        import torchvision

        cap = ""
        if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability"):
            cap = f", CPU capability {torch.backends.cpu.get_cpu_capability()}"
        self.describe = (
            f"PyTorch {torch.__version__} {'torch.compile (inductor)' if compiled else 'eager'}, torchvision "
            f"{torchvision.__version__} resnet{a.depth} body{fpn_note(a)}, inference_mode, {torch.get_num_threads()} threads, "
            f"oneDNN (mkldnn) {'on' if torch.backends.mkldnn.is_available() else 'off'}{cap}"
        )

    def forward(self):
        with self.torch.inference_mode():
            return self.fn(self.tx)

    def outputs(self):
        return [o.numpy() for o in self.forward()]


class OrtRunner(Runner):
    def __init__(self, a, x):
        super().__init__(a, x)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
        self.feed = {self.sess.get_inputs()[0].name: x}
        self.names = [o.name for o in self.sess.get_outputs()]
        self.describe = (
            f"ONNX Runtime {ort.__version__} CPUExecutionProvider, {a.threads} intra-op threads, "
            f"ORT_ENABLE_ALL, ONNX export {os.path.basename(a.onnx)}"
        )

    def forward(self):
        return self.sess.run(self.names, self.feed)

    def outputs(self):
        return self.forward()


class Unsupported(Exception):
    """The runner does not run on this machine (answered "unsupported <why>", not an error)."""


class OpenVinoRunner(Runner):
    def __init__(self, a, x, precision="f32"):
        super().__init__(a, x)
        try:
            import openvino as ov
        except ImportError:
            import openvino.runtime as ov
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": a.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        self.compiled = core.compile_model(core.read_model(a.onnx), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outs = [self.compiled.output(n) for n in levels(a)]
        version = ov.get_version() if hasattr(ov, "get_version") else "?"
        cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
        prec = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        prec = prec.get_type_name() if hasattr(prec, "get_type_name") else prec
        if precision != "f32" and precision not in str(prec):
            raise Unsupported(f"OpenVINO compiled the model at precision {prec}, not {precision}: this CPU has no native {precision}")
        self.describe = (
            f"OpenVINO {version} CPU plugin ({cpu}), {a.threads} threads, precision {prec}, "
            f"PERFORMANCE_HINT LATENCY, ONNX export {os.path.basename(a.onnx)}"
        )

    def forward(self):
        res = self.request.infer({0: self.x}, share_inputs=True, share_outputs=True)
        return [res[o] for o in self.outs]

    def outputs(self):
        return [o.copy() for o in self.forward()]


class OpenCvRunner(Runner):
    def __init__(self, a, x):
        super().__init__(a, x)
        import cv2

        cv2.setNumThreads(a.threads)
        self.net = cv2.dnn.readNetFromONNX(a.onnx)
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.describe = (
            f"OpenCV {cv2.__version__} DNN (python cv2, DNN_BACKEND_OPENCV, CPU), {cv2.getNumThreads()} threads, "
            f"ONNX export {os.path.basename(a.onnx)}"
        )

    def forward(self):
        self.net.setInput(self.x)
        return self.net.forward(levels(self.a))

    def outputs(self):
        return [o.copy() for o in self.forward()]


class TorchCudaRunner(Runner):
    """PyTorch eager on a CUDA device: the input is on the device before timing; each forward ends
    with torch.cuda.synchronize(), so a frame's time is that of the finished outputs."""

    def __init__(self, a, x):
        super().__init__(a, x)
        import torch
        import torchvision

        if not torch.cuda.is_available():
            raise RuntimeError(
                f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device: "
                "torch.cuda.is_available() is False"
            )
        torch.set_num_threads(a.threads)
        self.torch = torch
        self.dev = torch.device(a.device)
        torch.cuda.set_device(self.dev)
        if a.runner == "torch-cuda-fp32-notf32":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        body = load_body(a.depth, a.weights, a.fpn).to(self.dev)
        tx = torch.from_numpy(x).to(self.dev)
        if a.runner == "torch-cuda-fp16-cl":
            body = body.half().to(memory_format=torch.channels_last)
            tx = tx.half().contiguous(memory_format=torch.channels_last)
        self.body, self.tx = body, tx
        torch.cuda.synchronize(self.dev)
        prop = torch.cuda.get_device_properties(self.dev)
        self.describe = (
            f"PyTorch {torch.__version__} eager (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
            f"torchvision {torchvision.__version__} resnet{a.depth} body{fpn_note(a)}, inference_mode, on {a.device} ({prop.name}), "
            f"{str(tx.dtype).replace('torch.', '')}"
            f"{', channels_last' if a.runner == 'torch-cuda-fp16-cl' else ''}, "
            f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
            f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
            f"cudnn.benchmark={torch.backends.cudnn.benchmark}"
        )

    def forward(self):
        with self.torch.inference_mode():
            outs = self.body(self.tx)
        self.torch.cuda.synchronize(self.dev)
        return outs

    def outputs(self):
        return [o.float().contiguous().cpu().numpy() for o in self.forward()]


def make_runner(a, x):
    if a.runner == "torch-eager":
        return TorchRunner(a, x, compiled=False)
    if a.runner == "torch-compile":
        return TorchRunner(a, x, compiled=True)
    if a.runner == "onnxruntime":
        return OrtRunner(a, x)
    if a.runner == "openvino":
        return OpenVinoRunner(a, x)
    if a.runner == "openvino-bf16":
        return OpenVinoRunner(a, x, precision="bf16")
    if a.runner == "opencv":
        return OpenCvRunner(a, x)
    if a.runner in CUDA_RUNNERS:
        return TorchCudaRunner(a, x)
    raise RuntimeError(f"unknown runner '{a.runner}' (expected one of {', '.join(RUNNERS + CUDA_RUNNERS)})")


def cmd_worker(a):
    import numpy as np

    reply = os.fdopen(a.reply_fd, "w", buffering=1)

    def say(line):
        reply.write(line.replace("\n", " ") + "\n")
        reply.flush()

    try:
        x = np.ascontiguousarray(np.load(a.input).astype(np.float32))
        runner = make_runner(a, x)
        say("ready " + json.dumps({"describe": runner.describe, "python": sys.version.split()[0]}))
    except Unsupported as e:
        say(f"unsupported {e}")
        return 0
    except Exception as e:  # reported to the driver, which shows it and skips this runner
        traceback.print_exc()
        say(f"error {type(e).__name__}: {e}")
        return 1
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "check":
                outs = runner.to_numpy(runner.outputs())
                names = levels(a)
                if len(outs) != len(names):
                    raise RuntimeError(f"expected {len(names)} outputs, got {len(outs)}")
                for name, o in zip(names, outs):
                    np.save(os.path.join(parts[1], name + ".npy"), o)
                say("ok")
            elif parts[0] == "run":
                times = []
                for _ in range(int(parts[1])):
                    t0 = time.perf_counter()
                    runner.forward()
                    times.append((time.perf_counter() - t0) * 1e3)
                say("times " + " ".join(f"{t:.4f}" for t in times))
            elif parts[0] == "quit":
                return 0
            else:
                say(f"error unknown command '{parts[0]}'")
        except Exception as e:
            traceback.print_exc()
            say(f"error {type(e).__name__}: {e}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--depth", type=int, required=True)
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--fpn", action="store_true", help="add detectron2's FPN (p2..p6)")
    pp.add_argument("--out", required=True)
    pe = sub.add_parser("export-onnx")
    pe.add_argument("--depth", type=int, required=True)
    pe.add_argument("--weights", required=True)
    pe.add_argument("--fpn", action="store_true", help="the body with detectron2's FPN: outputs p2..p6")
    pe.add_argument("--height", type=int, required=True)
    pe.add_argument("--width", type=int, required=True)
    pe.add_argument("--opset", type=int, default=13)
    pe.add_argument("--out", required=True)
    pw = sub.add_parser("worker")
    pw.add_argument("--runner", required=True, choices=RUNNERS + CUDA_RUNNERS)
    pw.add_argument("--depth", type=int, required=True)
    pw.add_argument("--weights", required=True)
    pw.add_argument("--fpn", action="store_true", help="the body with detectron2's FPN: outputs p2..p6")
    pw.add_argument("--onnx", default="")
    pw.add_argument("--input", required=True)
    pw.add_argument("--threads", type=int, required=True)
    pw.add_argument("--reply-fd", type=int, default=3)
    pw.add_argument("--device", default="cpu", help="cuda:N for the torch-cuda-* runners")
    a = p.parse_args()
    if a.cmd == "prepare":
        return cmd_prepare(a)
    if a.cmd == "export-onnx":
        return cmd_export_onnx(a)
    return cmd_worker(a)


if __name__ == "__main__":
    sys.exit(main() or 0)
