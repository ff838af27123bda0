// SPDX-License-Identifier: Apache-2.0
// The deformable convolution kernel of deform_conv_nhwc.cu as __host__ __device__ phases of one
// thread block, so that a CPU test can run the very same tile code block by block (one loop over
// the threads per phase, a phase ending where the kernel has __syncthreads()). Without nvcc this
// header includes no CUDA header: BACKBONE_DEFORM_HD is plain `inline`.
//
// Design: a tiled implicit GEMM. A block computes kTileM output pixels (flattened over the batch) x
// kTileN output channels of one convolution group. K runs tap-major, channel-minor (the weight
// layout [out][tap][in / groups]); each K step covers up to kTileK channels of one tap that lie in
// one deformable group. Per (tap, deformable group) the block computes each pixel's four corner
// indices and bilinear weights and its mask (sigmoid of the logit) into shared memory; per K step
// the threads sample the input directly (no im2col buffer in global memory) into a float tile
// a[k][pixel] and load the weights into b[k][channel]; each thread then accumulates 4 x 4 outputs
// with float FMAs. The epilogue adds bias and residual, applies ReLU and stores in the storage type.
// The tensor-core variant (run_block_mma, fp16 / bf16 on sm_80+) keeps the same sampling but stores
// the tiles in the storage type (a[pixel][k], b[k][channel]), lets each warp accumulate 16 pixels x
// 32 channels with 16x16x16 matrix operations (the `Mma` policy: WMMA on the device, a plain loop
// in the CPU test), and runs the epilogue from the float accumulators staged in shared memory.
#pragma once

#include <math.h>

#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define BACKBONE_DEFORM_HD __host__ __device__ __forceinline__
#define BACKBONE_DEFORM_HD_TEMPLATE __host__ __device__
#else
#define BACKBONE_DEFORM_HD inline
#define BACKBONE_DEFORM_HD_TEMPLATE inline
#endif

namespace backbone::cuda_module::deform_tile {

constexpr int kTileM = 64;                              // output pixels per block
constexpr int kTileN = 64;                              // output channels per block
constexpr int kTileK = 16;                              // input channels per K step
constexpr int kThreads = 256;                           // threads per block: 16 (N) x 16 (M)
constexpr int kThreadsN = 16;
constexpr int kThreadsM = kThreads / kThreadsN;         // 16
constexpr int kPerThreadM = kTileM / kThreadsM;         // 4 pixels per thread: ty + 16 * i
constexpr int kPerThreadN = kTileN / kThreadsN;         // 4 channels per thread: tx + 16 * j
static_assert(kPerThreadM * kThreadsM == kTileM && kPerThreadN * kThreadsN == kTileN, "tile shape");

// The problem as DeformConvNhwcArgs describes it (sizes only).
struct Problem {
  int64_t n = 0, h = 0, w = 0, in_channels = 0, out_channels = 0, out_h = 0, out_w = 0;
  int64_t kernel = 3, stride = 1, padding = 1, dilation = 1, groups = 1, deformable_groups = 1;
  int64_t offset_channels = 0;
  bool modulated = false, relu = true;
};

// Sizes the kernel uses, derived once on the host.
struct Params {
  int64_t n, h, w, cin, cout, out_h, out_w, kernel, stride, padding, dilation, groups, dgs, offset_channels;
  int64_t cg;        // input channels per convolution group
  int64_t og;        // output channels per convolution group
  int64_t cd;        // input channels per deformable group
  int64_t taps;      // kernel * kernel
  int64_t plane;     // out_h * out_w
  int64_t pixels;    // n * out_h * out_w
  int64_t m_tiles;   // blocks along the pixels (grid x)
  int64_t oc_tiles;  // blocks along one group's output channels; grid y = groups * oc_tiles
  bool modulated, relu;
};

// What is wrong with `p` ("" when nothing is): the kernel's own limits included.
inline std::string validate(const Problem& p) {
  auto s = [](int64_t v) { return std::to_string(v); };
  if (p.n < 0 || p.h <= 0 || p.w <= 0 || p.in_channels <= 0 || p.out_channels <= 0)
    return "expected n >= 0 and positive h, w, in_channels, out_channels, found n " + s(p.n) + ", h " + s(p.h) +
           ", w " + s(p.w) + ", in_channels " + s(p.in_channels) + ", out_channels " + s(p.out_channels);
  if (p.kernel <= 0 || p.stride <= 0 || p.dilation <= 0 || p.padding < 0)
    return "expected kernel, stride, dilation > 0 and padding >= 0, found kernel " + s(p.kernel) + ", stride " +
           s(p.stride) + ", dilation " + s(p.dilation) + ", padding " + s(p.padding);
  if (p.groups <= 0 || p.in_channels % p.groups != 0 || p.out_channels % p.groups != 0)
    return "expected in_channels (" + s(p.in_channels) + ") and out_channels (" + s(p.out_channels) +
           ") divisible by groups (" + s(p.groups) + ")";
  if (p.deformable_groups <= 0 || p.in_channels % p.deformable_groups != 0)
    return "expected in_channels (" + s(p.in_channels) + ") divisible by deformable_groups (" +
           s(p.deformable_groups) + ")";
  const int64_t taps = p.kernel * p.kernel;
  const int64_t needed = (p.modulated ? 3 : 2) * p.deformable_groups * taps;
  if (p.offset_channels < needed)
    return "expected at least " + s(needed) + " offset channels (" + (p.modulated ? "3" : "2") +
           " * deformable_groups * kernel^2), found " + s(p.offset_channels);
  const int64_t eh = (p.h + 2 * p.padding - p.dilation * (p.kernel - 1) - 1) / p.stride + 1;
  const int64_t ew = (p.w + 2 * p.padding - p.dilation * (p.kernel - 1) - 1) / p.stride + 1;
  if (p.out_h != eh || p.out_w != ew)
    return "expected output " + s(eh) + "x" + s(ew) + ", found " + s(p.out_h) + "x" + s(p.out_w);
  if (p.h * p.w >= (int64_t{1} << 31)) return "expected h * w < 2^31, found " + s(p.h * p.w);
  const int64_t og = p.out_channels / p.groups;
  const int64_t tiles_y = p.groups * ((og + kTileN - 1) / kTileN);
  if (tiles_y > 65535) return "expected groups * ceil(out_channels / groups / 64) <= 65535, found " + s(tiles_y);
  const int64_t tiles_x = (p.n * p.out_h * p.out_w + kTileM - 1) / kTileM;
  if (tiles_x >= (int64_t{1} << 31)) return "expected fewer than 2^31 * 64 output pixels";
  return "";
}

inline Params make_params(const Problem& p) {
  Params q{};
  q.n = p.n, q.h = p.h, q.w = p.w, q.cin = p.in_channels, q.cout = p.out_channels, q.out_h = p.out_h,
  q.out_w = p.out_w;
  q.kernel = p.kernel, q.stride = p.stride, q.padding = p.padding, q.dilation = p.dilation, q.groups = p.groups;
  q.dgs = p.deformable_groups, q.offset_channels = p.offset_channels;
  q.cg = p.in_channels / p.groups;
  q.og = p.out_channels / p.groups;
  q.cd = p.in_channels / p.deformable_groups;
  q.taps = p.kernel * p.kernel;
  q.plane = p.out_h * p.out_w;
  q.pixels = p.n * q.plane;
  q.m_tiles = (q.pixels + kTileM - 1) / kTileM;
  q.oc_tiles = (q.og + kTileN - 1) / kTileN;
  q.modulated = p.modulated;
  q.relu = p.relu;
  return q;
}

// Shared memory of one block (about 11 KiB). The +1 columns keep the transposed stores of the
// tiles from hitting one bank.
struct Shared {
  float a[kTileK][kTileM + 1];  // sampled input, times the mask
  float b[kTileK][kTileN + 1];  // weights
  float weight[4][kTileM];      // bilinear weights of the four corners
  float mask[kTileM];
  int corner[4][kTileM];        // y * w + x of the corner in its image, -1 when not read
  int64_t image[kTileM];        // first pixel of the output pixel's image (b * h * w), -1 past the end
};

struct Accumulator {
  float v[kPerThreadM][kPerThreadN];
};

BACKBONE_DEFORM_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
BACKBONE_DEFORM_HD float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

template <typename S>
BACKBONE_DEFORM_HD_TEMPLATE void setup_pixels(const Params& p, S& s, int64_t m0, int tid) {
  for (int m = tid; m < kTileM; m += kThreads) {
    const int64_t pix = m0 + m;
    s.image[m] = pix < p.pixels ? (pix / p.plane) * p.h * p.w : -1;
  }
}

BACKBONE_DEFORM_HD void zero(Accumulator& acc) {
  for (int i = 0; i < kPerThreadM; ++i)
    for (int j = 0; j < kPerThreadN; ++j) acc.v[i][j] = 0.0f;
}

// Corner indices, bilinear weights (torchvision's bilinear_interpolate) and mask of every pixel of
// the tile for one tap and deformable group.
template <typename T, typename Io, typename S>
BACKBONE_DEFORM_HD_TEMPLATE void setup_samples(const Params& p, S& s, const T* offset, int64_t m0, int64_t tap,
                                        int64_t dg, int tid) {
  for (int m = tid; m < kTileM; m += kThreads) {
    const int64_t pix = m0 + m;
    float wt[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int corner[4] = {-1, -1, -1, -1};
    float mk = 0.0f;
    if (pix < p.pixels) {
      const int64_t r = pix % p.plane;
      const int64_t oy = r / p.out_w, ox = r % p.out_w;
      const int64_t i = tap / p.kernel, j = tap % p.kernel;
      const T* off = offset + pix * p.offset_channels;
      const float dy = Io::load(off, 2 * (dg * p.taps + tap));
      const float dx = Io::load(off, 2 * (dg * p.taps + tap) + 1);
      mk = p.modulated ? sigmoid(Io::load(off, 2 * p.dgs * p.taps + dg * p.taps + tap)) : 1.0f;
      const float y = static_cast<float>(oy * p.stride - p.padding + i * p.dilation) + dy;
      const float x = static_cast<float>(ox * p.stride - p.padding + j * p.dilation) + dx;
      if (!(y <= -1 || static_cast<float>(p.h) <= y || x <= -1 || static_cast<float>(p.w) <= x)) {
        const int64_t yl = static_cast<int64_t>(floorf(y)), xl = static_cast<int64_t>(floorf(x));
        const int64_t yh = yl + 1, xh = xl + 1;
        const float ly = y - static_cast<float>(yl), lx = x - static_cast<float>(xl);
        const float hy = 1 - ly, hx = 1 - lx;
        corner[0] = (yl >= 0 && xl >= 0) ? static_cast<int>(yl * p.w + xl) : -1;
        corner[1] = (yl >= 0 && xh <= p.w - 1) ? static_cast<int>(yl * p.w + xh) : -1;
        corner[2] = (yh <= p.h - 1 && xl >= 0) ? static_cast<int>(yh * p.w + xl) : -1;
        corner[3] = (yh <= p.h - 1 && xh <= p.w - 1) ? static_cast<int>(yh * p.w + xh) : -1;
        wt[0] = hy * hx;
        wt[1] = hy * lx;
        wt[2] = ly * hx;
        wt[3] = ly * lx;
      }
    }
    for (int k = 0; k < 4; ++k) {
      s.corner[k][m] = corner[k];
      s.weight[k][m] = wt[k];
    }
    s.mask[m] = mk;
  }
}

// One K step: channels [c0, c0 + kc) of convolution group grp (c0 relative to the group), one tap.
// Consecutive threads take consecutive channels of one pixel (coalesced NHWC reads).
// The sampled value (times the mask) of input channel c_abs at tile pixel m, or 0 past the end.
template <typename T, typename Io, typename S>
BACKBONE_DEFORM_HD_TEMPLATE float sample(const Params& p, const S& s, const T* input, int64_t c_abs, int m) {
  if (s.image[m] < 0) return 0.0f;
  const T* src = input + s.image[m] * p.cin + c_abs;  // this channel in pixel (0, 0) of the image
  const int i0 = s.corner[0][m], i1 = s.corner[1][m], i2 = s.corner[2][m], i3 = s.corner[3][m];
  const float v1 = i0 >= 0 ? Io::load(src, static_cast<int64_t>(i0) * p.cin) : 0.0f;
  const float v2 = i1 >= 0 ? Io::load(src, static_cast<int64_t>(i1) * p.cin) : 0.0f;
  const float v3 = i2 >= 0 ? Io::load(src, static_cast<int64_t>(i2) * p.cin) : 0.0f;
  const float v4 = i3 >= 0 ? Io::load(src, static_cast<int64_t>(i3) * p.cin) : 0.0f;
  return s.mask[m] * (s.weight[0][m] * v1 + s.weight[1][m] * v2 + s.weight[2][m] * v3 + s.weight[3][m] * v4);
}

template <typename T, typename Io>
BACKBONE_DEFORM_HD_TEMPLATE void load_tiles(const Params& p, Shared& s, const T* input, const T* weight, int64_t grp,
                                     int64_t n0, int64_t tap, int64_t c0, int kc, int tid) {
  const int64_t c_abs = grp * p.cg + c0;
  for (int e = tid; e < kTileK * kTileM; e += kThreads) {
    const int kk = e % kTileK, m = e / kTileK;
    s.a[kk][m] = kk < kc ? sample<T, Io>(p, s, input, c_abs + kk, m) : 0.0f;
  }
  for (int e = tid; e < kTileK * kTileN; e += kThreads) {
    const int kk = e % kTileK, nn = e / kTileK;
    const int64_t o = n0 + nn;
    float v = 0.0f;
    if (kk < kc && o < p.og) v = Io::load(weight, ((grp * p.og + o) * p.taps + tap) * p.cg + c0 + kk);
    s.b[kk][nn] = v;
  }
}

BACKBONE_DEFORM_HD void accumulate(const Shared& s, Accumulator& acc, int tid) {
  const int tx = tid % kThreadsN, ty = tid / kThreadsN;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int kk = 0; kk < kTileK; ++kk) {
    float a[kPerThreadM], b[kPerThreadN];
    for (int i = 0; i < kPerThreadM; ++i) a[i] = s.a[kk][ty + i * kThreadsM];
    for (int j = 0; j < kPerThreadN; ++j) b[j] = s.b[kk][tx + j * kThreadsN];
    for (int i = 0; i < kPerThreadM; ++i)
      for (int j = 0; j < kPerThreadN; ++j) acc.v[i][j] += a[i] * b[j];
  }
}

// One output element (pixel pix, channel oc): act(v + bias + residual), rounded once to the storage type.
template <typename T, typename Io>
BACKBONE_DEFORM_HD_TEMPLATE void store_output(const Params& p, float v, const float* bias, const T* residual, T* out,
                                              int64_t pix, int64_t oc) {
  const int64_t index = pix * p.cout + oc;
  if (bias) v += bias[oc];
  if (residual) v += Io::load(residual, index);
  if (p.relu && v < 0.0f) v = 0.0f;
  Io::store(out, index, v);
}

// out = act(acc + bias + residual), rounded once to the storage type.
template <typename T, typename Io>
BACKBONE_DEFORM_HD_TEMPLATE void store_outputs(const Params& p, const Accumulator& acc, const float* bias, const T* residual,
                                        T* out, int64_t m0, int64_t grp, int64_t n0, int tid) {
  const int tx = tid % kThreadsN, ty = tid / kThreadsN;
  for (int i = 0; i < kPerThreadM; ++i) {
    const int64_t pix = m0 + ty + i * kThreadsM;
    if (pix >= p.pixels) continue;
    for (int j = 0; j < kPerThreadN; ++j) {
      const int64_t o = n0 + tx + j * kThreadsN;
      if (o >= p.og) continue;
      store_output<T, Io>(p, acc.v[i][j], bias, residual, out, pix, grp * p.og + o);
    }
  }
}

// The whole block (block_m along the pixels, block_n = group * oc_tiles + channel tile).
// exec.each(fn) runs fn(tid, accumulator of tid) for every thread of the block and then is a
// barrier: on the device one call per thread followed by __syncthreads(), on the host a loop.
// Every loop bound below is uniform over the block, so each thread reaches the same barriers.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename T, typename Io, typename Exec>
BACKBONE_DEFORM_HD_TEMPLATE void run_block(const Params& p, Shared& s, Exec& exec, int64_t block_m, int64_t block_n,
                                    const T* input, const T* offset, const T* weight, const float* bias,
                                    const T* residual, T* out) {
  const int64_t m0 = block_m * kTileM;
  const int64_t grp = block_n / p.oc_tiles;
  const int64_t n0 = (block_n % p.oc_tiles) * kTileN;
  exec.each([&](int tid, Accumulator& acc) {
    setup_pixels(p, s, m0, tid);
    zero(acc);
  });
  for (int64_t tap = 0; tap < p.taps; ++tap) {
    // Segments of the group's channels [cs, seg_end) that lie in one deformable group.
    for (int64_t cs = 0; cs < p.cg;) {
      const int64_t dg = (grp * p.cg + cs) / p.cd;
      const int64_t seg_end = min64(p.cg, (dg + 1) * p.cd - grp * p.cg);
      exec.each([&](int tid, Accumulator&) { setup_samples<T, Io>(p, s, offset, m0, tap, dg, tid); });
      for (int64_t c0 = cs; c0 < seg_end; c0 += kTileK) {
        const int kc = static_cast<int>(min64(kTileK, seg_end - c0));
        exec.each([&](int tid, Accumulator&) { load_tiles<T, Io>(p, s, input, weight, grp, n0, tap, c0, kc, tid); });
        exec.each([&](int tid, Accumulator& acc) { accumulate(s, acc, tid); });
      }
      cs = seg_end;
    }
  }
  exec.each([&](int tid, Accumulator& acc) { store_outputs<T, Io>(p, acc, bias, residual, out, m0, grp, n0, tid); });
}

// ---- tensor-core variant -------------------------------------------------------------------------

constexpr int kLdA = kTileK + 8;  // leading dimensions (elements) of the shared tiles: multiples of 8
constexpr int kLdB = kTileN + 8;  // (16-byte rows) for the 16-bit matrix loads, 4 for the float one
constexpr int kLdC = kTileN + 4;
constexpr int kWarpRows = 16;  // a warp accumulates 16 pixels x 32 channels: two 16x16 fragments
constexpr int kWarpCols = 32;
constexpr int kWarpsM = kTileM / kWarpRows;  // 4
static_assert(kWarpsM * (kTileN / kWarpCols) * 32 == kThreads, "one warp per 16 x 32 part of the tile");
static_assert(kTileK == 16, "one 16x16x16 matrix operation per K step");

// Shared memory of the tensor-core block (about 25 KiB for 16-bit T); 32-byte aligned rows.
template <typename T>
struct SharedMma {
  alignas(32) T a[kTileM][kLdA];     // sampled input (times the mask) in the storage type
  alignas(32) T b[kTileK][kLdB];     // weights
  alignas(32) float c[kTileM][kLdC]; // the warps' accumulators, for the epilogue
  float weight[4][kTileM];
  float mask[kTileM];
  int corner[4][kTileM];
  int64_t image[kTileM];
};

// First row (pixel) and column (channel) of warp `warp`'s 16 x 32 part of the tile.
BACKBONE_DEFORM_HD void warp_origin(int warp, int& row, int& col) {
  row = (warp % kWarpsM) * kWarpRows;
  col = (warp / kWarpsM) * kWarpCols;
}

// Io::convert(float) -> T rounds to the storage type.
template <typename T, typename Io>
BACKBONE_DEFORM_HD_TEMPLATE void load_tiles_mma(const Params& p, SharedMma<T>& s, const T* input, const T* weight,
                                         int64_t grp, int64_t n0, int64_t tap, int64_t c0, int kc, int tid) {
  const int64_t c_abs = grp * p.cg + c0;
  for (int e = tid; e < kTileK * kTileM; e += kThreads) {
    const int kk = e % kTileK, m = e / kTileK;
    s.a[m][kk] = Io::convert(kk < kc ? sample<T, Io>(p, s, input, c_abs + kk, m) : 0.0f);
  }
  for (int e = tid; e < kTileK * kTileN; e += kThreads) {
    const int kk = e % kTileK, nn = e / kTileK;
    const int64_t o = n0 + nn;
    s.b[kk][nn] = (kk < kc && o < p.og) ? weight[((grp * p.og + o) * p.taps + tap) * p.cg + c0 + kk]
                                        : Io::convert(0.0f);
  }
}

// out = act(c + bias + residual) from the staged accumulators; consecutive threads take consecutive
// channels (coalesced stores).
template <typename T, typename Io, typename S>
BACKBONE_DEFORM_HD_TEMPLATE void store_outputs_staged(const Params& p, const S& s, const float* bias, const T* residual,
                                               T* out, int64_t m0, int64_t grp, int64_t n0, int tid) {
  for (int e = tid; e < kTileM * kTileN; e += kThreads) {
    const int m = e / kTileN, nn = e % kTileN;
    const int64_t pix = m0 + m, o = n0 + nn;
    if (pix >= p.pixels || o >= p.og) continue;
    store_output<T, Io>(p, s.c[m][nn], bias, residual, out, pix, grp * p.og + o);
  }
}

// As run_block, with the Mma policy's zero / step / finish (warp-collective on the device: every
// thread calls them) on the per-thread state Exec::State.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename T, typename Io, typename Mma, typename Exec>
BACKBONE_DEFORM_HD_TEMPLATE void run_block_mma(const Params& p, SharedMma<T>& s, Exec& exec, int64_t block_m,
                                        int64_t block_n, const T* input, const T* offset, const T* weight,
                                        const float* bias, const T* residual, T* out) {
  using State = typename Exec::State;
  const int64_t m0 = block_m * kTileM;
  const int64_t grp = block_n / p.oc_tiles;
  const int64_t n0 = (block_n % p.oc_tiles) * kTileN;
  exec.each([&](int tid, State& st) {
    setup_pixels(p, s, m0, tid);
    Mma::zero(s, st, tid);
  });
  for (int64_t tap = 0; tap < p.taps; ++tap) {
    for (int64_t cs = 0; cs < p.cg;) {
      const int64_t dg = (grp * p.cg + cs) / p.cd;
      const int64_t seg_end = min64(p.cg, (dg + 1) * p.cd - grp * p.cg);
      exec.each([&](int tid, State&) { setup_samples<T, Io>(p, s, offset, m0, tap, dg, tid); });
      for (int64_t c0 = cs; c0 < seg_end; c0 += kTileK) {
        const int kc = static_cast<int>(min64(kTileK, seg_end - c0));
        exec.each([&](int tid, State&) { load_tiles_mma<T, Io>(p, s, input, weight, grp, n0, tap, c0, kc, tid); });
        exec.each([&](int tid, State& st) { Mma::step(s, st, tid); });
      }
      cs = seg_end;
    }
  }
  exec.each([&](int tid, State& st) { Mma::finish(s, st, tid); });
  exec.each([&](int tid, State&) { store_outputs_staged<T, Io>(p, s, bias, residual, out, m0, grp, n0, tid); });
}

}  // namespace backbone::cuda_module::deform_tile
