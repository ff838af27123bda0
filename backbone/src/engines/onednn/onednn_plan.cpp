// SPDX-License-Identifier: Apache-2.0
// The oneDNN engine's folded model and Plan (onednn_plan.h): BN folding, the plain NCHW kernels for
// GroupNorm/LayerNorm, and the steps a plan records (convolutions with pre-packed weights and fused
// post-ops, reorders, norms and deformable convolutions on plain float32 copies).
#include "engines/onednn/onednn_plan.h"

#include <omp.h>

#include <algorithm>
#include <string_view>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backbone/error.h"
#include "backbone/ops.h"
#include "engines/onednn/onednn_tune.h"
#include "ops/cpu/deform_conv2d_kernel.h"

namespace backbone::detail::onednn {
namespace {

// ---------------------------------------------------------------------------------------------
// Plain NCHW float32 kernels for what oneDNN does not fold (run on copies).

void group_norm(float* x, int64_t n, int64_t c, int64_t hw, const ConvW& w) {
  const int64_t g = w.num_groups, cg = c / g;
#pragma omp parallel for collapse(2)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t gi = 0; gi < g; ++gi) {
      float* p = x + (i * c + gi * cg) * hw;
      const int64_t m = cg * hw;
      double sum = 0, sq = 0;
      for (int64_t j = 0; j < m; ++j) sum += p[j];
      const double mean = sum / static_cast<double>(m);
      for (int64_t j = 0; j < m; ++j) sq += (p[j] - mean) * (p[j] - mean);
      const double inv = 1.0 / std::sqrt(sq / static_cast<double>(m) + w.eps);
      for (int64_t ch = 0; ch < cg; ++ch) {
        const double a = inv * w.norm_weight[gi * cg + ch];
        const double b = w.norm_bias[gi * cg + ch] - mean * a;
        float* q = p + ch * hw;
        for (int64_t j = 0; j < hw; ++j) q[j] = static_cast<float>(q[j] * a + b);
      }
    }
}

// detectron2's LayerNorm: over the channels of each pixel.
void layer_norm(float* x, int64_t n, int64_t c, int64_t hw, const ConvW& w) {
#pragma omp parallel for collapse(2)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < hw; ++j) {
      float* p = x + i * c * hw + j;
      double sum = 0, sq = 0;
      for (int64_t ch = 0; ch < c; ++ch) sum += p[ch * hw];
      const double mean = sum / static_cast<double>(c);
      for (int64_t ch = 0; ch < c; ++ch) sq += (p[ch * hw] - mean) * (p[ch * hw] - mean);
      const double inv = 1.0 / std::sqrt(sq / static_cast<double>(c) + w.eps);
      for (int64_t ch = 0; ch < c; ++ch)
        p[ch * hw] = static_cast<float>((p[ch * hw] - mean) * inv * w.norm_weight[ch] + w.norm_bias[ch]);
    }
}
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

ConvW fold(const Conv2d& c) {
  ConvW w;
  w.out = c.out_channels;
  w.in = c.in_channels;
  w.k = c.kernel_size;
  w.stride = c.stride;
  w.pad = c.padding;
  w.dilation = c.dilation;
  w.groups = c.groups;
  const FoldedConv folded = fold_batch_norm(c);  // the BN family folded in
  if (!c.norm.empty() && !c.norm.is_batch_norm()) {
    w.norm = c.norm.kind;
    w.eps = c.norm.eps();
    w.num_groups = c.norm.num_groups();
    for (double v : to_doubles(c.norm.weight)) w.norm_weight.push_back(static_cast<float>(v));
    for (double v : to_doubles(c.norm.bias)) w.norm_bias.push_back(static_cast<float>(v));
  }
  w.weight.assign(folded.weight.begin(), folded.weight.end());
  w.bias.assign(folded.bias.begin(), folded.bias.end());
  return w;
}

std::shared_ptr<void> aligned_alloc_shared(size_t bytes) {
  bytes = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw Error("oneDNN engine: out of memory allocating " + std::to_string(bytes) + " bytes");
  return std::shared_ptr<void>(p, AlignedFree{});
}

void scale_output(ConvW& w, float s) {
  auto scale = [s](std::vector<float>& v) {
    for (float& x : v) x *= s;
  };
  if (w.norm.empty()) {
    scale(w.weight);
    scale(w.bias);
  } else {
    scale(w.norm_weight);
    scale(w.norm_bias);
  }
}

// ---------------------------------------------------------------------------------------------
// Plan.

Plan::Act Plan::new_act(const memory::dims& d, dt dtype) {
  Act a{d, -1, dtype};
  const size_t bytes = act_md(a).get_size();
  // Best fit among the free slots: the smallest one already large enough, else the largest (grown).
  int fit = -1, largest = -1;
  for (size_t i = 0; i < slot_busy_.size(); ++i) {
    if (slot_busy_[i]) continue;
    const int s = static_cast<int>(i);
    if (slot_bytes_[i] >= bytes && (fit < 0 || slot_bytes_[i] < slot_bytes_[fit])) fit = s;
    if (largest < 0 || slot_bytes_[i] > slot_bytes_[largest]) largest = s;
  }
  a.slot = fit >= 0 ? fit : largest;
  if (a.slot < 0) {
    slot_busy_.push_back(false);
    slot_held_.push_back(false);
    slot_bytes_.push_back(0);
    a.slot = static_cast<int>(slot_busy_.size() - 1);
  }
  slot_busy_[a.slot] = true;
  slot_bytes_[a.slot] = std::max(slot_bytes_[a.slot], bytes);
  return a;
}

void Plan::release(const Act& a) {
  if (!slot_held_.at(a.slot)) slot_busy_.at(a.slot) = false;
}

size_t PackedWeights::hash_of(const ConvW& w) {
  return std::hash<std::string_view>()(
      std::string_view(reinterpret_cast<const char*>(w.weight.data()), w.weight.size() * sizeof(float)));
}

const PackedWeights::Entry* PackedWeights::find_locked(size_t hash, const ConvW& w, const memory::desc& layout) const {
  for (const Entry& e : entries_)
    if (e.hash == hash && e.count == w.weight.size() && e.layout == layout) return &e;
  return nullptr;
}

bool PackedWeights::has(const ConvW& w, const memory::desc& layout) {
  const size_t hash = hash_of(w);
  std::lock_guard<std::mutex> guard(mutex_);
  return find_locked(hash, w, layout) != nullptr;
}

memory PackedWeights::get(const ConvW& w, const memory::desc& layout, const memory& user, const dnnl::engine& eng) {
  const size_t hash = hash_of(w);
  std::lock_guard<std::mutex> guard(mutex_);
  if (const Entry* e = find_locked(hash, w, layout)) return e->packed;
  memory packed(layout, eng);
  dnnl::stream s(eng);
  memory src = user;
  dnnl::reorder(src, packed).execute(s, src, packed);
  s.wait();
  entries_.push_back({hash, w.weight.size(), layout, packed});
  bytes_ += layout.get_size();
  return packed;
}

void Plan::ConvPrim::run(dnnl::stream& s, const memory& src, const memory& dst, const memory& scratch) const {
  prim.execute(s, {{DNNL_ARG_SRC, src},
                   {DNNL_ARG_WEIGHTS, weights},
                   {DNNL_ARG_BIAS, bias},
                   {DNNL_ARG_DST, dst},
                   {DNNL_ARG_SCRATCHPAD, scratch}});
}

Plan::ConvPrim Plan::make_conv(const ConvW& w, const memory::desc& src_md, const memory::desc& dst_md, bool sum,
                               bool relu, dt weights_dt, float sum_scale) {
#if DNNL_VERSION_MAJOR >= 3
  const memory::dims sd = src_md.get_dims();
#else
  const memory::dims sd = src_md.dims();
#endif
  const int64_t g = w.groups;
  memory::dims wdims = g == 1 ? memory::dims{w.out, sd[1], w.k, w.k}
                              : memory::dims{g, w.out / g, sd[1] / g, w.k, w.k};
  memory::desc w_any(wdims, weights_dt, tag::any);
  memory::desc b_md({w.out}, dt::f32, tag::x);
  dnnl::post_ops ops;
  if (sum) ops.append_sum(sum_scale);
#if DNNL_VERSION_MAJOR >= 3
  if (relu) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
#else
  if (relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
#endif
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const memory::dims strides{w.stride, w.stride}, dil{w.dilation - 1, w.dilation - 1}, pad{w.pad, w.pad};
  auto make_pd = [&](dnnl::algorithm alg) {
#if DNNL_VERSION_MAJOR >= 3
    // oneDNN 3.0 removed the op descriptors: the primitive descriptor takes the parameters.
    return dnnl::convolution_forward::primitive_desc(eng_, dnnl::prop_kind::forward_inference, alg, src_md, w_any,
                                                     b_md, dst_md, strides, dil, pad, pad, attr);
#else
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src_md, w_any, b_md, dst_md,
                                         strides, dil, pad, pad);
    return dnnl::convolution_forward::primitive_desc(desc, attr, eng_);
#endif
  };
  // float32 3x3 stride-1 convolutions: Winograd where oneDNN has it for the shape and the
  // algorithm asks for it (Auto: where measured faster and within the layer bound, onednn_tune.h).
  dnnl::convolution_forward::primitive_desc pd;
  bool have = false;
  if (algo_ != ConvAlgorithm::Direct && weights_dt == dt::f32 && w.k == 3 && w.stride == 1 && w.dilation == 1 &&
      w.groups == 1) {
    try {
      pd = make_pd(dnnl::algorithm::convolution_winograd);
      have = true;
    } catch (const dnnl::error&) {
      // not implemented for this shape or layout: direct below
    }
    if (have) {
      ++winograd_eligible_;
      if (algo_ == ConvAlgorithm::Auto) {
        const auto direct = make_pd(dnnl::algorithm::convolution_direct);
        // Weights an earlier plan (another batch or frame size) packed for one of the two kernels
        // decide, so that a new shape packs nothing again; else the measured choice.
        bool wino = false;
        if (packed_ && packed_->has(w, pd.weights_desc())) {
          wino = true;
        } else if (!(packed_ && packed_->has(w, direct.weights_desc()))) {
          wino = choose_winograd(eng_, machine_, w, direct, pd, sum, relu).winograd;
        }
        if (!wino) pd = direct;
        if (wino) ++winograd_used_;
      } else {
        ++winograd_used_;
      }
    }
  }
  if (!have) pd = make_pd(dnnl::algorithm::convolution_direct);
  note_scratchpad(pd.scratchpad_desc());
  ConvPrim p;
  p.prim = dnnl::convolution_forward(pd);
  p.impl = pd.impl_info_str();
  // Pre-pack the weights once: user layout (f32 oihw/goihw) -> the kernel's layout.
  memory user_w(memory::desc(wdims, dt::f32, g == 1 ? tag::oihw : tag::goihw), eng_,
                const_cast<float*>(w.weight.data()));
  if (packed_) {
    p.weights = packed_->get(w, pd.weights_desc(), user_w, eng_);
  } else {
    p.weights = memory(pd.weights_desc(), eng_);
    dnnl::stream s(eng_);
    dnnl::reorder(user_w, p.weights).execute(s, user_w, p.weights);
    s.wait();
  }
  p.bias = memory(b_md, eng_);
  std::memcpy(p.bias.get_data_handle(), w.bias.data(), w.bias.size() * sizeof(float));
  impls_[p.impl] += 1;
  return p;
}

void Plan::reorder_step(const memory::desc& src_md, std::function<void*()> src_ptr, const memory::desc& dst_md,
                  std::function<void*()> dst_ptr) {
  dnnl::reorder::primitive_desc pd(eng_, src_md, eng_, dst_md);
  auto r = dnnl::reorder(pd);
  steps_.push_back([this, r, src_md, dst_md, src_ptr, dst_ptr](dnnl::stream& s) {
    memory src(src_md, eng_, src_ptr()), dst(dst_md, eng_, dst_ptr());
    r.execute(s, src, dst);
  });
}

// conv(src) [+ existing dst] [ReLU] -> dst, with GN/LN handled on plain copies.
void Plan::conv_step(const ConvW& w, const Act& src, const Act& dst, bool sum, bool relu, float sum_scale) {
  if (w.norm.empty()) {
    auto p = std::make_shared<ConvPrim>(
        make_conv(w, act_md(src), act_md(dst), sum, relu, src.dtype, sum_scale));
    const int ss = src.slot, ds = dst.slot;
    const memory::desc smd = act_md(src), dmd = act_md(dst);
    steps_.push_back([this, p, ss, ds, smd, dmd](dnnl::stream& s) {
      memory src(smd, eng_, slot_ptr(ss)), dst(dmd, eng_, slot_ptr(ds));
      p->run(s, src, dst, scratch_mem_);
    });
    return;
  }
  if (src.dtype == dt::f32) {
    // Convolution into a temporary slot, then norm [+ sum] [+ ReLU] on plain float32 copies.
    Act tmp = new_act(dst.dims, dt::f32);
    conv_step(w_no_norm(w), src, tmp, false, false);
    to_plain(tmp, 0);
    release(tmp);
  } else {
    // bf16: a convolution followed by GroupNorm/LayerNorm runs in float32 (on a plain copy of its
    // source): the norm divides by the spread of few values, which magnifies bf16's rounding.
    to_plain(src, 1);
    plain_conv_step(w, src.dims, 1, dst.dims, 0);
  }
  finish_plain(w, dst, sum, relu, sum_scale);
}

// A float32 convolution (no norm) between plain buffers.
void Plan::plain_conv_step(const ConvW& w, const memory::dims& src_dims, int src, const memory::dims& dst_dims,
                           int dst) {
  need_plain(plain_md(dst_dims).get_size());
  auto p = std::make_shared<ConvPrim>(
      make_conv(w_no_norm(w), plain_md(src_dims), plain_md(dst_dims), false, false, dt::f32));
  const memory::desc smd = plain_md(src_dims), dmd = plain_md(dst_dims);
  steps_.push_back([this, p, src, dst, smd, dmd](dnnl::stream& s) {
    memory sm(smd, eng_, plain_ptr(src)), dm(dmd, eng_, plain_ptr(dst));
    p->run(s, sm, dm, scratch_mem_);
  });
}

// plain buffer `i` (float32 NCHW, dims of `a`) <- activation a
void Plan::to_plain(const Act& a, int i) {
  need_plain(plain_md(a.dims).get_size());
  const int slot = a.slot;
  reorder_step(act_md(a), [this, slot] { return slot_ptr(slot); }, plain_md(a.dims),
               [this, i] { return plain_ptr(i); });
}
void Plan::from_plain(int i, const Act& a) {
  need_plain(plain_md(a.dims).get_size());
  const int slot = a.slot;
  reorder_step(plain_md(a.dims), [this, i] { return plain_ptr(i); }, act_md(a),
               [this, slot] { return slot_ptr(slot); });
}

// plain 0 holds a convolution's output with dst's dims: apply w's norm, add dst when `sum`, ReLU,
// and store into dst.
void Plan::finish_plain(const ConvW& w, const Act& dst, bool sum, bool relu, float sum_scale) {
  if (sum) to_plain(dst, 1);
  const memory::dims d = dst.dims;
  const ConvW* wp = &w;  // the plan's owner keeps the folded model alive
  steps_.push_back([this, d, wp, sum, relu, sum_scale](dnnl::stream& s) {
    s.wait();
    float* x = plain_f(0);
    const int64_t hw = d[2] * d[3], total = d[0] * d[1] * hw;
    if (wp->norm == "GN") group_norm(x, d[0], d[1], hw, *wp);
    if (wp->norm == "LN") layer_norm(x, d[0], d[1], hw, *wp);
    const float* y = plain_f(1);
#pragma omp parallel for
    for (int64_t j = 0; j < total; ++j) {
      float v = x[j] + (sum ? sum_scale * y[j] : 0.0f);
      x[j] = relu && v < 0.0f ? 0.0f : v;
    }
  });
  from_plain(0, dst);
}

// The deformable conv2 of a DeformBottleneckBlock: offsets from conv2_offset, this project's
// deformable im2col, a oneDNN 1x1 convolution over the columns; then conv2's norm and ReLU.
void Plan::deform_step(const BlockW& b, const Act& src, const Act& dst) {
  const ConvW& w = b.conv2;
  const memory::dims od = conv_out_dims(src.dims, b.conv2_offset);
  // The input as plain float32, and from it the offsets (and mask logits) in float32 whatever the
  // precision: bf16 offsets would move the sampling points.
  to_plain(src, 1);
  plain_conv_step(b.conv2_offset, src.dims, 1, od, 2);
  const int64_t n = src.dims[0], c = src.dims[1], h = src.dims[2], wd = src.dims[3];
  const int64_t ho = dst.dims[2], wo = dst.dims[3], k = w.k;
  const size_t col_bytes = static_cast<size_t>(c * k * k * ho * wo) * sizeof(float);
  cols_bytes_ = std::max(cols_bytes_, col_bytes);
  // The columns [1, C*k*k, Ho, Wo] times the folded weights regrouped as [O, C/g*k*k, 1, 1].
  ConvW w1 = w_no_norm(w);
  w1.in = c * k * k;
  w1.k = 1;
  w1.stride = 1;
  w1.pad = 0;
  w1.dilation = 1;
  auto w1p = std::make_shared<ConvW>(std::move(w1));
  const memory::desc col_md = plain_md({1, c * k * k, ho, wo}), out_md = plain_md({1, w.out, ho, wo});
  auto p = std::make_shared<ConvPrim>(make_conv(*w1p, col_md, out_md, false, false, dt::f32));
  need_plain(plain_md(dst.dims).get_size());
  ops::DeformConv2dParams prm;
  prm.stride_h = prm.stride_w = w.stride;
  prm.pad_h = prm.pad_w = w.pad;
  prm.dilation_h = prm.dilation_w = w.dilation;
  prm.groups = w.groups;
  prm.deformable_groups = b.deform_num_groups;
  const bool modulated = b.deform_modulated;
  const int64_t off_c = od[1];
  steps_.push_back([this, p, w1p, prm, modulated, n, c, h, wd, ho, wo, k, off_c, col_md, out_md,
                    oc = w.out](dnnl::stream& s) {
    s.wait();
    const float* x = plain_f(1);
    float* om = plain_f(2);
    float* out = plain_f(0);
    const int64_t hw = ho * wo;
    for (int64_t i = 0; i < n; ++i) {
      float* offs = om + i * off_c * hw;
      float* mask = nullptr;
      if (modulated) {  // offset_x, offset_y, mask = chunk(3); mask = sigmoid(mask)
        mask = offs + (off_c / 3) * 2 * hw;
        const int64_t m = (off_c / 3) * hw;
#pragma omp parallel for
        for (int64_t j = 0; j < m; ++j) mask[j] = 1.0f / (1.0f + std::exp(-mask[j]));
      }
      detail::deformable_im2col(x + i * c * h * wd, offs, mask, c, h, wd, k, k, prm, ho, wo,
                                static_cast<float*>(cols_ptr()));
      memory col(col_md, eng_, cols_ptr()), dst(out_md, eng_, out + i * oc * hw);
      p->run(s, col, dst, scratch_mem_);
      s.wait();
    }
  });
  finish_plain(w, dst, false, true);
}

// Allocation, once the whole network is planned.
void Plan::finalize(Workspace* workspace) {
  // 64-byte aligned pieces one after the other.
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t off = at;
    at += (bytes + 63) / 64 * 64;
    return off;
  };
  slot_off_.clear();
  for (size_t bytes : slot_bytes_) slot_off_.push_back(take(bytes));
  plain_off_.clear();
  for (int i = 0; i < 3; ++i) plain_off_.push_back(take(need_plain_bytes_));
  cols_off_ = take(cols_bytes_);
  scratch_off_ = take(std::max<size_t>(scratch_bytes_, 1));
  total_bytes_ = at;
  workspace_ = workspace ? workspace : &own_workspace_;
  bind();
}

void Plan::bind() {
  char* base = workspace_->reserve(total_bytes_);
  if (base == base_) return;
  base_ = base;
  scratch_mem_ = memory(memory::desc({static_cast<int64_t>(std::max<size_t>(scratch_bytes_, 1))}, dt::u8, tag::x),
                        eng_, base_ + scratch_off_);
}

void Plan::copy_step(const Act& src, const Act& dst) {
  const int ss = src.slot, ds = dst.slot;
  reorder_step(act_md(src), [this, ss] { return slot_ptr(ss); }, act_md(dst), [this, ds] { return slot_ptr(ds); });
}

void Plan::emit(const std::string& name, const Act& a) {
  const size_t idx = outputs_.size();
  outputs_.push_back({name, a.dims});
  const int slot = a.slot;
  reorder_step(act_md(a), [this, slot] { return slot_ptr(slot); }, plain_md(a.dims),
               [this, idx] { return static_cast<void*>(out_ptrs_[idx]); });
}

}  // namespace backbone::detail::onednn
