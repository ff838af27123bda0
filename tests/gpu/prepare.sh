#!/usr/bin/env bash
# Prepares .gpu/ for this project's GPU checks on a machine that has CUDA, CMake and PyTorch but not
# Debian's packages (this workplace's lent GPU machine): the shared bundle (GStreamer with its CUDA
# library, yaml-cpp, GoogleTest) plus nlohmann-json, which this project requires (oneDNN, 40 MB, does
# not fit the 64 MiB carry: the CPU reference there is the LibTorch engine on the machine's PyTorch, or
# PyTorch itself). Run here, from the project root:
#   bash tests/gpu/prepare.sh
# then carry .gpu to the GPU machine and run there:  source .gpu/env.sh && bash tests/gpu/check.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
../shared/gpu/bundle.sh gst
extra="nlohmann-json3-dev"
tmp=$(mktemp -d)
( cd "$tmp" && apt-get download $extra >/dev/null 2>&1 )
for f in "$tmp"/*.deb; do dpkg -x "$f" .gpu/root; done
rm -rf "$tmp" .gpu/root/usr/share/doc
du -sh .gpu | awk '{print "prepare.sh: .gpu is " $1 " (carry limit 64 MiB with the tree)"}'
