#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Creates the virtual environment of backbone-bench's PyPI peers (measurement only: the project's
# build and tests never use it): PyTorch 2.x (CPU), ONNX Runtime, OpenVINO, current OpenCV
# (opencv-python-headless), onnx and numpy.
#
#   bench/peers/setup-venv.sh [DIR]
#
# DIR defaults to $XDG_CACHE_HOME/backbone-bench/venv (~/.cache/backbone-bench/venv), i.e. under
# backbone-bench's default --work-dir and outside the build tree. Then run
#   backbone-bench --peers-venv DIR ...
# PyTorch (and torchvision) come from download.pytorch.org's CPU index when it is reachable (about
# 200 MB); otherwise from PyPI, whose default Linux wheel also pulls about 3 GB of NVIDIA packages
# (the venv is then about 6 GB). PyPI's torch 2.15 wheel does not import without them
# (libcufile.so.0 missing), so they are not skipped. DIR/versions.txt records what was installed.
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/backbone-bench"
dir="${1:-$cache/venv}"
python="${BACKBONE_BENCH_PYTHON:-/usr/bin/python3}"

log() { echo "setup-venv: $*" >&2; }

if [[ ! -x "$dir/bin/python" ]]; then
  log "creating $dir with $python"
  "$python" -m venv "$dir"
fi
py="$dir/bin/python"
pip=("$py" -m pip --disable-pip-version-check --no-input)
"${pip[@]}" install --upgrade pip >/dev/null

torch_ok() { "$py" -c 'import torch; x = torch.ones(2, 2); assert float((x @ x).sum()) == 8.0' 2>/dev/null; }

if torch_ok; then
  log "torch already installed"
else
  log "installing torch and torchvision from https://download.pytorch.org/whl/cpu"
  if ! "${pip[@]}" install --retries 1 --timeout 20 --index-url https://download.pytorch.org/whl/cpu torch torchvision || ! torch_ok; then
    log "the CPU index failed; installing PyPI's torch and torchvision (with torch's NVIDIA dependencies, ~3 GB)"
    "${pip[@]}" install torch torchvision
    torch_ok || { log "error: torch does not import in $dir"; exit 1; }
  fi
fi
"$py" -c 'import torchvision' 2>/dev/null || "${pip[@]}" install torchvision

log "installing onnxruntime, openvino, opencv-python-headless, onnx, numpy"
"${pip[@]}" install onnxruntime openvino opencv-python-headless onnx numpy

"$py" - "$dir/versions.txt" <<'EOF'
import importlib, sys
lines = [f"python {sys.version.split()[0]}"]
for mod in ["torch", "torchvision", "onnxruntime", "openvino", "cv2", "onnx", "numpy"]:
    try:
        m = importlib.import_module(mod)
        v = getattr(m, "__version__", None)
        if v is None and mod == "openvino":
            from openvino.runtime import get_version
            v = get_version()
        lines.append(f"{mod} {v}")
    except Exception as e:  # recorded, not fatal: backbone-bench skips a peer that does not import
        lines.append(f"{mod} unavailable: {type(e).__name__}: {e}")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "done: $dir (backbone-bench --peers-venv $dir)"
