// SPDX-License-Identifier: Apache-2.0
// A video frame to the engine's NHWC input in one kernel: every output element (pixel) is computed
// directly by frame/frame_pixel.h's output_pixel, the function the CPU twin
// (frame/cuda_frame.cpp: detail::preprocess_frame_twin) runs in a host loop: colour conversion of
// each source pixel it needs, PIL's two resize passes (the horizontal one recomputed per vertical
// tap), (x - mean) / std, zero padding. Host frames go through pinned staging and one asynchronous
// upload; device frames are read in place.
#include "ops/cuda/preprocess_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/module_common.h"
#include "frame/frame_pixel.h"
#include "ops/cuda/nhwc_common.cuh"

namespace backbone::cuda_module {
namespace {

constexpr int kThreads = 256;
constexpr std::size_t kMaxTableSets = 4;     // geometries whose resize tables stay on the device
constexpr std::size_t kPlaneAlign = 256;     // plane starts in the staging buffers
constexpr std::size_t kStagingRound = 1 << 20;  // staging grows in MiB steps

// float32 to the storage type, round to nearest even (__float2half_rn, __float2bfloat16_rn).
using nhwc_detail::from_float;

// One thread per output pixel of [padded_height][padded_width][c_padded] (grid-stride).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    preprocess_frame_kernel(const frame_pixel::Params p, T* __restrict__ dst, int64_t c_padded) {
  const int64_t n = p.padded_width * p.padded_height;
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t oy = i / p.padded_width;
    const int64_t ox = i - oy * p.padded_width;
    float v[3];
    frame_pixel::output_pixel(p, ox, oy, v);
    T* o = dst + i * c_padded;
    o[0] = from_float<T>(v[0]);
    o[1] = from_float<T>(v[1]);
    o[2] = from_float<T>(v[2]);
    for (int64_t c = 3; c < c_padded; ++c) o[c] = from_float<T>(0.0f);
  }
}

template <typename T>
void launch(const frame_pixel::Params& p, void* dst, int64_t c_padded, cudaStream_t stream) {
  const int64_t n = p.padded_width * p.padded_height;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 20);
  preprocess_frame_kernel<T><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(p, static_cast<T*>(dst),
                                                                                        c_padded);
  BACKBONE_CUDA_CHECK(cudaGetLastError());  // preprocess_frame_kernel
}

std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

}  // namespace

struct FramePreprocessor::Impl {
  // Host frames: planes copied into pinned memory, uploaded with one cudaMemcpyAsync into staging.
  uint8_t* pinned = nullptr;
  std::size_t pinned_bytes = 0;
  DeviceBuffer staging;
  cudaEvent_t upload_done = nullptr;  // recorded after the upload that reads `pinned`
  cudaEvent_t kernel_done = nullptr;  // recorded after the last kernel (it reads staging and the tables)

  // Device copies of the resize tables, per geometry (frame size -> resized size).
  struct TableSet {
    int64_t width = 0, height = 0, resized_width = 0, resized_height = 0;
    int32_t h_ksize = 0, v_ksize = 0;
    std::size_t h_bounds = 0, h_weights = 0, v_bounds = 0, v_weights = 0;  // element offsets in buf
    DeviceBuffer buf;
    uint64_t last_use = 0;
  };
  std::vector<TableSet> table_sets;
  uint64_t calls = 0;

  ~Impl() {
    // Nothing may still read what is freed here; errors cannot be reported from a destructor.
    if (upload_done) cudaEventSynchronize(upload_done);
    if (kernel_done) cudaEventSynchronize(kernel_done);
    if (pinned) cudaFreeHost(pinned);
    if (upload_done) cudaEventDestroy(upload_done);
    if (kernel_done) cudaEventDestroy(kernel_done);
  }

  void ensure_events() {
    if (!upload_done) BACKBONE_CUDA_CHECK(cudaEventCreateWithFlags(&upload_done, cudaEventDisableTiming));
    if (!kernel_done) BACKBONE_CUDA_CHECK(cudaEventCreateWithFlags(&kernel_done, cudaEventDisableTiming));
  }

  // The device tables for the geometry of `a` (uploaded on first use, after checking that they read
  // inside the frame); fills the table pointers and kernel sizes of p.d.
  void bind_tables(const BackboneCudaFrameArgs& a, frame_pixel::Params& p, cudaStream_t stream) {
    const auto& d = *static_cast<const BackboneCudaFrameDetail*>(a.detail);
    p.d.h_bounds = p.d.h_weights = p.d.v_bounds = p.d.v_weights = nullptr;
    if (!d.resize_h && !d.resize_v) return;
    ++calls;
    TableSet* set = nullptr;
    for (auto& s : table_sets)
      if (s.width == a.width && s.height == a.height && s.resized_width == a.resized_width &&
          s.resized_height == a.resized_height)
        set = &s;
    if (set == nullptr) {
      const std::string problem = frame_pixel::check_resize_tables(a);
      if (!problem.empty()) throw_argument_error("preprocess frame: " + problem);
      if (table_sets.size() >= kMaxTableSets) {
        // Evict the least recently used set once no kernel reads it any more.
        BACKBONE_CUDA_CHECK(cudaEventSynchronize(kernel_done));
        auto oldest = std::min_element(table_sets.begin(), table_sets.end(),
                                       [](const TableSet& x, const TableSet& y) { return x.last_use < y.last_use; });
        table_sets.erase(oldest);
      }
      TableSet s;
      s.width = a.width;
      s.height = a.height;
      s.resized_width = a.resized_width;
      s.resized_height = a.resized_height;
      std::vector<int32_t> host;
      auto put = [&host](const int32_t* v, std::size_t n) {
        const std::size_t at = host.size();
        host.insert(host.end(), v, v + n);
        return at;
      };
      if (d.resize_h) {
        s.h_ksize = d.h_ksize;
        s.h_bounds = put(d.h_bounds, static_cast<std::size_t>(2 * a.resized_width));
        s.h_weights = put(d.h_weights, static_cast<std::size_t>(a.resized_width * d.h_ksize));
      }
      if (d.resize_v) {
        s.v_ksize = d.v_ksize;
        s.v_bounds = put(d.v_bounds, static_cast<std::size_t>(2 * a.resized_height));
        s.v_weights = put(d.v_weights, static_cast<std::size_t>(a.resized_height * d.v_ksize));
      }
      s.buf = DeviceBuffer(host.size() * sizeof(int32_t));
      // From pageable memory: returns once `host` has been staged, so it may go out of scope.
      BACKBONE_CUDA_CHECK(cudaMemcpyAsync(s.buf.get(), host.data(), host.size() * sizeof(int32_t),
                                          cudaMemcpyHostToDevice, stream));
      table_sets.push_back(std::move(s));
      set = &table_sets.back();
    }
    set->last_use = calls;
    const int32_t* base = static_cast<const int32_t*>(set->buf.get());
    // The kernel sizes of the checked, uploaded tables (not the caller's, which could differ).
    p.d.resize_h = d.resize_h;
    p.d.resize_v = d.resize_v;
    p.d.h_ksize = set->h_ksize;
    p.d.v_ksize = set->v_ksize;
    if (d.resize_h) {
      p.d.h_bounds = base + set->h_bounds;
      p.d.h_weights = base + set->h_weights;
    }
    if (d.resize_v) {
      p.d.v_bounds = base + set->v_bounds;
      p.d.v_weights = base + set->v_weights;
    }
  }

  // Host planes -> pinned staging -> device staging on `stream`; points p's planes at the device
  // copy (tightly packed rows).
  void upload(const BackboneCudaFrameArgs& a, frame_pixel::Params& p, cudaStream_t stream) {
    const auto& d = *static_cast<const BackboneCudaFrameDetail*>(a.detail);
    std::size_t offsets[3] = {0, 0, 0};
    std::size_t total = 0;
    for (int i = 0; i < d.n_planes; ++i) {
      offsets[i] = total;
      total = align_up(total + static_cast<std::size_t>(d.plane_row_bytes[i] * d.plane_rows[i]), kPlaneAlign);
    }
    // The pinned buffer is rewritten only after the previous upload from it has completed.
    BACKBONE_CUDA_CHECK(cudaEventSynchronize(upload_done));
    if (total > pinned_bytes) {
      if (pinned) BACKBONE_CUDA_CHECK(cudaFreeHost(pinned));
      pinned = nullptr;
      pinned_bytes = 0;
      const std::size_t bytes = align_up(total, kStagingRound);
      BACKBONE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&pinned), bytes, cudaHostAllocPortable));
      pinned_bytes = bytes;
    }
    for (int i = 0; i < d.n_planes; ++i) {
      const int64_t row = d.plane_row_bytes[i];
      uint8_t* out = pinned + offsets[i];
      if (a.strides[i] == row) {
        std::memcpy(out, a.planes[i], static_cast<std::size_t>(row * d.plane_rows[i]));
      } else {
        for (int64_t y = 0; y < d.plane_rows[i]; ++y)
          std::memcpy(out + y * row, a.planes[i] + y * a.strides[i], static_cast<std::size_t>(row));
      }
    }
    // The device staging buffer is rewritten only after the previous kernel has read it (run() makes
    // `stream` wait for it; a reallocation waits on the host first).
    if (total > staging.bytes()) {
      BACKBONE_CUDA_CHECK(cudaEventSynchronize(kernel_done));
      staging = DeviceBuffer();
      staging = DeviceBuffer(align_up(total, kStagingRound));
    }
    BACKBONE_CUDA_CHECK(cudaMemcpyAsync(staging.get(), pinned, total, cudaMemcpyHostToDevice, stream));
    BACKBONE_CUDA_CHECK(cudaEventRecord(upload_done, stream));
    const uint8_t* base = static_cast<const uint8_t*>(staging.get());
    for (int i = 0; i < 3; ++i) {
      p.planes[i] = i < d.n_planes ? base + offsets[i] : nullptr;
      p.strides[i] = i < d.n_planes ? d.plane_row_bytes[i] : 0;
    }
  }
};

FramePreprocessor::FramePreprocessor() : impl_(std::make_unique<Impl>()) {}
FramePreprocessor::~FramePreprocessor() = default;

void FramePreprocessor::run(const BackboneCudaFrameArgs& args, StorageType t, void* dst, int64_t c_padded,
                            cudaStream_t stream) {
  const std::string problem = frame_pixel::check_frame_args(args, c_padded);
  if (!problem.empty()) throw_argument_error("preprocess frame: " + problem);
  if (dst == nullptr) throw_argument_error("preprocess frame: output: expected device memory, found null");
  if (t != StorageType::Float32 && t != StorageType::Float16 && t != StorageType::BFloat16)
    throw_argument_error("preprocess frame: storage type: expected fp32, fp16 or bf16, found " +
                         std::to_string(static_cast<int>(t)));
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  BACKBONE_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone)
    throw_argument_error(
        "preprocess frame: expected a stream that is not capturing a CUDA graph (host frames are staged by the "
        "host, the planes change every frame), found one capturing");
  Impl& im = *impl_;
  im.ensure_events();
  // Successive calls may come on different streams: this one starts after the previous kernel (which
  // read the staging buffer and tables that this call may rewrite or that it reuses once uploaded).
  BACKBONE_CUDA_CHECK(cudaStreamWaitEvent(stream, im.kernel_done, 0));

  frame_pixel::Params p = frame_pixel::params_from_args(args);

  im.bind_tables(args, p, stream);
  if (args.on_device) {
    int device = -1;
    BACKBONE_CUDA_CHECK(cudaGetDevice(&device));
    for (int i = 0; i < p.d.n_planes; ++i) {
      cudaPointerAttributes attr{};
      BACKBONE_CUDA_CHECK(cudaPointerGetAttributes(&attr, args.planes[i]));
      if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        throw_argument_error("preprocess frame: plane " + std::to_string(i) +
                             ": expected device memory (on_device 1), found " +
                             (attr.type == cudaMemoryTypeHost ? "pinned host memory" : "unregistered host memory"));
      if (attr.type == cudaMemoryTypeDevice && attr.device != device)
        throw_argument_error("preprocess frame: plane " + std::to_string(i) + ": expected memory of device " +
                             std::to_string(device) + ", found memory of device " + std::to_string(attr.device));
    }
  } else {
    im.upload(args, p, stream);
  }

  switch (t) {
    case StorageType::Float32: launch<float>(p, dst, c_padded, stream); break;
    case StorageType::Float16: launch<__half>(p, dst, c_padded, stream); break;
    case StorageType::BFloat16: launch<__nv_bfloat16>(p, dst, c_padded, stream); break;
  }
  BACKBONE_CUDA_CHECK(cudaEventRecord(im.kernel_done, stream));
}

}  // namespace backbone::cuda_module
