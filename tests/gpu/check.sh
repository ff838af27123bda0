#!/usr/bin/env bash
# The GPU checks in one go, on a machine with an NVIDIA GPU: build for the card present, run
# every GPU test (ctest -L gpu: kernels against their CPU twins, the preprocessing kernel, the cuda
# engine with and without detectron2's FPN, the element on cudaupload frames; then the cuda cases of
# the golden, bench and tool suites) and the GPU section
# of backbone-bench. Logs, JSON and the markdown report go to $OUT (default ./gpu-check-out).
# On this workplace's lent machine: bash tests/gpu/prepare.sh here first, carry .gpu, then
#   source .gpu/env.sh && bash tests/gpu/check.sh
# Environment: BUILD_DIR (build-gpu), CMAKE_ARGS (extra -D...), BENCH_ARGS (default --quick),
# SKIP_BENCH=1 to run only the tests.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
build=${BUILD_DIR:-build-gpu}
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.[:space:]')
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | tee "$out/gpu.txt"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
# shellcheck disable=SC2086
if ! cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${arch:-90}" \
     ${CMAKE_ARGS:-} > "$out/configure.log" 2>&1; then
  tail -40 "$out/configure.log"; echo "check.sh: configure failed"; exit 1
fi
grep "backbone:" "$out/configure.log"
start=$(date +%s)
if ! cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1; then
  grep -m 30 -E "error|FAILED" "$out/build.log"; echo "check.sh: build failed"; exit 1
fi
echo "check.sh: built in $(( $(date +%s) - start )) s"
ctest --test-dir "$build" -L gpu --output-on-failure -j 4 --timeout 300 > "$out/ctest-gpu.log" 2>&1
test_rc=$?
grep -E "tests passed|Failed|\*\*\*" "$out/ctest-gpu.log" | head -60
# The FPN on the GPU (CudaEngineGpuFpn: seeded FPNs against the CPU and detectron2's FPN goldens;
# the upsample + add kernel and LastLevelMaxPool's max pool against their twins), counted apart.
fpn_lines=$(grep -E "Test +#[0-9]+: (CudaEngineGpuFpn|NhwcKernelsCuda\.(Upsample2xAdd|MaxPool))" "$out/ctest-gpu.log")
fpn_total=$(grep -c . <<<"$fpn_lines"); fpn_passed=$(grep -c " Passed" <<<"$fpn_lines")
fpn_skipped=$(grep -c "Skipped" <<<"$fpn_lines")
echo "check.sh: FPN on the GPU: $fpn_passed passed, $((fpn_total - fpn_passed - fpn_skipped)) failed, $fpn_skipped skipped"
# GPU cases that live in suites labelled otherwise: the cuda engine on every golden case, the tools.
ctest --test-dir "$build" -R "Golden.*[Cc]uda|GpuSection|InferTool.CudaEngine|ExtractTest.CudaEngine" \
  --output-on-failure -j 4 --timeout 300 > "$out/ctest-gpu-more.log" 2>&1 || test_rc=1
grep -E "tests passed|Failed|\*\*\*" "$out/ctest-gpu-more.log" | head -40
bench_rc=skipped
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  # shellcheck disable=SC2086
  "$build/bin/backbone-bench" --gpu ${BENCH_ARGS:---quick} --peers-dir bench/peers --timeout 240 \
    --work-dir "$out/bench-work" --json "$out/gpu.json" --markdown "$out/gpu.md" > "$out/bench.log" 2>&1
  bench_rc=$?
  [ -f "$out/gpu.md" ] && cat "$out/gpu.md" || tail -30 "$out/bench.log"
fi
echo "check.sh: ctest -L gpu exit $test_rc, backbone-bench exit $bench_rc; logs in $out"
[ "$test_rc" = 0 ] && { [ "$bench_rc" = 0 ] || [ "$bench_rc" = skipped ]; }
