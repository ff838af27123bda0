// SPDX-License-Identifier: Apache-2.0
// detectron2's FPN on the oneDNN engine, planned after the bottom-up ResNet in the same Plan and the
// same activation layout (blocked nChw16c, f32 or bf16):
//  - lateral and output convolutions as the ResNet's (BN family folded, weights pre-packed, bias as
//    a post-op; GroupNorm/LayerNorm as the engine runs them);
//  - the top-down fusion without a separate add: the coarser level is upsampled (nearest, 2x) once,
//    straight into the buffer of the finer level, and the lateral 1x1 convolution adds itself to it
//    through a sum post-op. "avg" halves both terms: the sum post-op's scale 0.5 and the lateral's
//    weights and bias (or its norm's affine) pre-scaled by 0.5, exact in floating point;
//  - LastLevelMaxPool (max_pool2d, kernel 1, stride 2) as a strided copy; LastLevelP6P7 as two
//    stride-2 convolutions with the ReLU applied in place to p6's buffer once p6 has been emitted
//    (detectron2 returns p6 before the ReLU and feeds relu(p6) to p7).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backbone/error.h"
#include "engines/onednn/onednn_plan.h"

namespace backbone::detail::onednn {
namespace {

using Act = Plan::Act;

// The blocked layout's geometry: [N][C/16][H][W][16] (channels padded to 16).
struct Blocked {
  int64_t n, cb, h, w;
  explicit Blocked(const memory::dims& d) : n(d[0]), cb((d[1] + 15) / 16), h(d[2]), w(d[3]) {}
};

void require_blocked(const Plan& p) {
  if (p.act_tag_ != tag::nChw16c)
    throw Error("oneDNN engine: the FPN's top-down pass expects activations in nChw16c");
}

// dst (2h x 2w) <- nearest 2x upsampling of src (h x w), block by block (B = 16 elements in bytes).
template <size_t B>
void upsample2x(const char* src, char* dst, const Blocked& s) {
  const int64_t ow = 2 * s.w;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t nc = 0; nc < s.n * s.cb; ++nc)
    for (int64_t y = 0; y < s.h; ++y) {
      const char* in = src + (nc * s.h + y) * s.w * B;
      char* out = dst + (nc * 2 * s.h + 2 * y) * ow * B;
      for (int64_t x = 0; x < s.w; ++x) {
        std::memcpy(out + 2 * x * B, in + x * B, B);
        std::memcpy(out + (2 * x + 1) * B, in + x * B, B);
      }
      std::memcpy(out + ow * B, out, static_cast<size_t>(ow) * B);  // the row below: the same
    }
}

// dst <- src[:, :, ::2, ::2] (max_pool2d with kernel 1, stride 2).
template <size_t B>
void subsample2x(const char* src, char* dst, const Blocked& s, const Blocked& d) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t nc = 0; nc < d.n * d.cb; ++nc)
    for (int64_t y = 0; y < d.h; ++y) {
      const char* in = src + (nc * s.h + 2 * y) * s.w * B;
      char* out = dst + (nc * d.h + y) * d.w * B;
      for (int64_t x = 0; x < d.w; ++x) std::memcpy(out + x * B, in + 2 * x * B, B);
    }
}

void upsample_step(Plan& p, const Act& src, const Act& dst) {
  const Blocked s(src.dims);
  const int ss = src.slot, ds = dst.slot;
  const bool f32 = src.dtype == dt::f32;
  p.steps_.push_back([&p, s, ss, ds, f32](dnnl::stream& st) {
    st.wait();
    const char* in = static_cast<const char*>(p.slot_ptr(ss));
    char* out = static_cast<char*>(p.slot_ptr(ds));
    if (f32) upsample2x<64>(in, out, s);
    else upsample2x<32>(in, out, s);
  });
}

void subsample_step(Plan& p, const Act& src, const Act& dst) {
  const Blocked s(src.dims), d(dst.dims);
  const int ss = src.slot, ds = dst.slot;
  const bool f32 = src.dtype == dt::f32;
  p.steps_.push_back([&p, s, d, ss, ds, f32](dnnl::stream& st) {
    st.wait();
    const char* in = static_cast<const char*>(p.slot_ptr(ss));
    char* out = static_cast<char*>(p.slot_ptr(ds));
    if (f32) subsample2x<64>(in, out, s, d);
    else subsample2x<32>(in, out, s, d);
  });
}

// a <- relu(a) in place (f32, or bf16 by its sign bit; the zero padding stays zero).
void relu_step(Plan& p, const Act& a) {
  const size_t bytes = p.act_md(a).get_size();
  const int slot = a.slot;
  const bool f32 = a.dtype == dt::f32;
  p.steps_.push_back([&p, bytes, slot, f32](dnnl::stream& st) {
    st.wait();
    if (f32) {
      float* x = static_cast<float*>(p.slot_ptr(slot));
      const int64_t n = static_cast<int64_t>(bytes / 4);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] < 0.0f ? 0.0f : x[i];
    } else {
      uint16_t* x = static_cast<uint16_t*>(p.slot_ptr(slot));
      const int64_t n = static_cast<int64_t>(bytes / 2);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) x[i] = (x[i] & 0x8000u) ? uint16_t{0} : x[i];
    }
  });
}

}  // namespace

FpnW::FpnW(const FPN& fpn)
    : levels(fpn),
      avg(fpn.fuse_type() == "avg"),
      f32_levels(fpn.norm() == "GN" || fpn.norm() == "LN"),
      top(fpn.top_block.kind), top_in_feature(fpn.top_block.in_feature) {
  for (const auto& [name, shape] : fpn.output_shape()) names.push_back(name);
  const size_t n = fpn.lateral_convs.size();
  if (n == 0 || fpn.output_convs.size() != n || levels.in_features.size() != n)
    throw ShapeError("FPN: expected one lateral and one output convolution per in_feature (" +
                     std::to_string(levels.in_features.size()) + "), found " + std::to_string(n) + " and " +
                     std::to_string(fpn.output_convs.size()));
  for (size_t i = 0; i < n; ++i) {
    lateral.push_back(fold(fpn.lateral_convs[i]));
    // avg: prev = (lateral + top_down) / 2 for every level but the coarsest, computed as
    // 0.5 * lateral (here) + 0.5 * top_down (the sum post-op's scale).
    if (avg && i + 1 < n) scale_output(lateral.back(), 0.5f);
    output.push_back(fold(fpn.output_convs[i]));
  }
  if (top == TopBlockKind::LastLevelP6P7) {
    p6 = fold(fpn.top_block.p6);
    p7 = fold(fpn.top_block.p7);
  }
}

std::vector<std::string> FpnW::inputs() const {
  std::vector<std::string> r = levels.in_features;
  if (top == TopBlockKind::LastLevelP6P7 && std::find(r.begin(), r.end(), top_in_feature) == r.end())
    r.push_back(top_in_feature);
  return r;
}

void plan_fpn(Plan& p, const FpnW& f, const std::map<std::string, Act>& bottom_up,
              const std::function<bool(const std::string&)>& wanted) {
  require_blocked(p);
  auto input = [&](const std::string& name) -> const Act& {
    auto it = bottom_up.find(name);
    if (it == bottom_up.end()) throw Error("FPN: bottom-up output " + name + " was not computed");
    return it->second;
  };
  const size_t n = f.lateral.size();
  std::vector<std::pair<int64_t, int64_t>> hw;
  for (const auto& name : f.levels.in_features) hw.emplace_back(input(name).dims[2], input(name).dims[3]);
  check_fpn_level_sizes(f.levels, hw);

  // A bottom-up map is released once nothing later reads it.
  std::map<std::string, bool> released;
  auto done_with = [&](const std::string& name) {
    if (released[name]) return;
    released[name] = true;
    const Act& a = input(name);
    p.unhold(a);
    p.release(a);
  };
  const bool p6p7 = f.top == TopBlockKind::LastLevelP6P7;

  // Output convolutions run for the wanted p-levels only (and the coarsest for LastLevelMaxPool's
  // p6); the top-down pass stops at the finest of them.
  const bool maxpool = f.top == TopBlockKind::LastLevelMaxPool && n < f.names.size() && wanted(f.names[n]);
  std::vector<bool> need(n, false);
  size_t finest = n;
  for (size_t i = n; i-- > 0;) {
    need[i] = wanted(f.names[i]) || (i + 1 == n && maxpool);
    if (need[i]) finest = i;
  }

  auto level_act = [&](const memory::dims& d) { return f.f32_levels ? p.new_act(d, dt::f32) : p.new_act(d); };
  Act prev;
  bool have_prev = false;
  for (size_t i = n; finest < n && i-- > finest;) {
    const std::string& in_name = f.levels.in_features[i];
    const Act& c = input(in_name);
    Act lat = level_act(Plan::conv_out_dims(c.dims, f.lateral[i]));
    if (!have_prev) {
      p.conv_step(f.lateral[i], c, lat, false, false);
    } else {
      // lat <- upsample(prev); lat <- lateral(c) + lat (avg: 0.5 * each), in the convolution's pass.
      upsample_step(p, prev, lat);
      p.release(prev);
      p.conv_step(f.lateral[i], c, lat, true, false, f.avg ? 0.5f : 1.0f);
    }
    if (!(p6p7 && in_name == f.top_in_feature)) done_with(in_name);
    prev = lat;
    have_prev = true;
    if (!need[i]) continue;
    Act out = level_act(Plan::conv_out_dims(lat.dims, f.output[i]));
    p.conv_step(f.output[i], lat, out, false, false);
    if (wanted(f.names[i])) p.emit(f.names[i], out);
    if (i + 1 == n && maxpool) {
      Act pooled = level_act({out.dims[0], out.dims[1], fpn_maxpool_size(out.dims[2]), fpn_maxpool_size(out.dims[3])});
      subsample_step(p, out, pooled);
      p.emit(f.names[n], pooled);
      p.release(pooled);
    }
    p.release(out);
  }
  if (have_prev) p.release(prev);

  if (p6p7 && f.names.size() >= n + 2 && (wanted(f.names[n]) || wanted(f.names[n + 1]))) {
    const Act& c = input(f.top_in_feature);
    Act p6 = p.new_act(Plan::conv_out_dims(c.dims, f.p6));
    p.conv_step(f.p6, c, p6, false, false);
    done_with(f.top_in_feature);
    if (wanted(f.names[n])) p.emit(f.names[n], p6);
    if (wanted(f.names[n + 1])) {
      relu_step(p, p6);  // after p6 was emitted: p6 itself is returned without the ReLU
      Act p7 = p.new_act(Plan::conv_out_dims(p6.dims, f.p7));
      p.conv_step(f.p7, p6, p7, false, false);
      p.emit(f.names[n + 1], p7);
      p.release(p7);
    }
    p.release(p6);
  }
  for (const auto& [name, a] : bottom_up) done_with(name);
}

}  // namespace backbone::detail::onednn
