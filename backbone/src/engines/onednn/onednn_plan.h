// SPDX-License-Identifier: Apache-2.0
// Internal to the oneDNN engine: the folded model (ConvW) and the Plan, every primitive and buffer
// for one input shape, shared by the ResNet (onednn_engine.cpp) and the FPN (onednn_fpn.cpp).
#pragma once

#include <dnnl.hpp>
#ifndef DNNL_VERSION_MAJOR
#error "expected oneDNN's dnnl.hpp to define DNNL_VERSION_MAJOR"
#endif

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backbone/fpn.h"
#include "backbone/resnet.h"
#include "engines/engines.h"

namespace backbone::detail::onednn {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

// A convolution with its BatchNorm (any of the BN family) folded into weight and bias; GroupNorm and
// LayerNorm kept apart.
struct ConvW {
  int64_t out = 0, in = 0, k = 1, stride = 1, pad = 0, dilation = 1, groups = 1;
  std::vector<float> weight;  // [out, in/groups, k, k]
  std::vector<float> bias;    // [out] (zeros when the conv had neither bias nor BN)
  std::string norm;           // "", "GN" or "LN": applied after the convolution
  std::vector<float> norm_weight, norm_bias;
  double eps = 1e-5;
  int64_t num_groups = 32;
};

// W' = W * s, b' = (b - mean) * s + beta (double precision) for the BN family.
ConvW fold(const Conv2d& c);

// The convolution's result scaled by `s` (a power of two: exact): its weights and bias, or the affine
// of its GroupNorm/LayerNorm, which comes after.
void scale_output(ConvW& w, float s);

struct BlockW {
  BlockKind kind;
  std::optional<ConvW> shortcut;
  ConvW conv1, conv2, conv3, conv2_offset;
  bool deform_modulated = false;
  int64_t deform_num_groups = 1;
};

std::shared_ptr<void> aligned_alloc_shared(size_t bytes);

// Each convolution's weights packed into the layouts its kernels asked for, shared by every plan
// (one per input shape: batch size, frame size), so that a new shape packs nothing it has packed.
class PackedWeights {
 public:
  // `w`'s weights in `layout` (packing them from `user` the first time).
  memory get(const ConvW& w, const memory::desc& layout, const memory& user, const dnnl::engine& eng);
  // Whether `w`'s weights are already packed in `layout` (by an earlier plan).
  bool has(const ConvW& w, const memory::desc& layout);
  size_t bytes() const { return bytes_; }

 private:
  // Keyed by the weights' values (plans pack copies too, e.g. a GroupNorm conv's weights without
  // the norm), their count and the layout.
  struct Entry {
    size_t hash, count;
    memory::desc layout;
    memory packed;
  };
  static size_t hash_of(const ConvW& w);
  // The entry of these weights in `layout`, or null (mutex_ held).
  const Entry* find_locked(size_t hash, const ConvW& w, const memory::desc& layout) const;
  std::mutex mutex_;
  std::vector<Entry> entries_;
  size_t bytes_ = 0;
};

// The buffers of the plan that runs: activation slots, plain buffers, deformable columns and the
// scratchpad, in one allocation the size of the largest plan's. Plans (one per input shape) run one
// at a time under the engine's lock and bind to it before they run, so that planning more shapes
// (batch sizes, frame sizes) adds no activation memory beyond the largest.
class Workspace {
 public:
  // At least `bytes`; reallocated (contents not kept) when larger than before.
  char* reserve(size_t bytes) {
    if (bytes > size_ || !buffer_) {
      buffer_ = aligned_alloc_shared(std::max<size_t>(bytes, 64));
      size_ = bytes;
    }
    return static_cast<char*>(buffer_.get());
  }
  size_t size() const { return size_; }

 private:
  std::shared_ptr<void> buffer_;
  size_t size_ = 0;
};

// A plan: every primitive and buffer for one input shape. Activations live in slots (buffers reused
// layer after layer) in one layout (act_tag) and data type; steps are replayed for every frame.
class Plan {
 public:
  struct Output {
    std::string name;
    memory::dims dims;  // N, C, H, W (or N, classes)
  };

  // `packed`: the engine's weight cache (outlives the plan); null packs each plan's own copy.
  // `algo`: how float32 3x3 stride-1 convolutions run (Auto: measured per layer shape under
  // `machine`, see onednn_tune.h).
  Plan(const dnnl::engine& eng, dt act_dt, tag act_tag, ConvAlgorithm algo, std::string machine,
       PackedWeights* packed = nullptr)
      : algo_(algo), machine_(std::move(machine)), eng_(eng), act_dt_(act_dt), act_tag_(act_tag), packed_(packed) {}

  // Building ---------------------------------------------------------------------------------

  struct Act {  // an activation in the plan's layout, in one of the slots
    memory::dims dims;
    int slot = -1;
    dt dtype = dt::f32;
  };

  // A slot-backed activation of dims d (a free slot, preferring one already large enough), of the
  // plan's activation data type or `dtype`.
  Act new_act(const memory::dims& d) { return new_act(d, act_dt_); }
  Act new_act(const memory::dims& d, dt dtype);
  // The slot is free for later activations, unless held.
  void release(const Act& a);
  // A held activation survives release() until unhold() (bottom-up maps the FPN reads later).
  void hold(const Act& a) { slot_held_.at(a.slot) = true; }
  bool held(const Act& a) const { return slot_held_.at(a.slot); }
  void unhold(const Act& a) { slot_held_.at(a.slot) = false; }

  memory::desc act_md(const Act& a) const { return memory::desc(a.dims, a.dtype, act_tag_); }
  static memory::desc plain_md(const memory::dims& d) { return memory::desc(d, dt::f32, tag::nchw); }
  static memory::dims conv_out_dims(const memory::dims& in, const ConvW& w) {
    auto o = [&](int64_t s) { return (s + 2 * w.pad - (w.dilation * (w.k - 1) + 1)) / w.stride + 1; };
    return {in[0], w.out, o(in[2]), o(in[3])};
  }

  // A convolution primitive from src_md to dst_md with `w`'s folded weights (pre-packed), bias,
  // optional sum (dst = conv + sum_scale * dst) and ReLU as post-ops.
  struct ConvPrim {
    dnnl::convolution_forward prim;
    memory weights, bias;
    std::string impl;
    void run(dnnl::stream& s, const memory& src, const memory& dst, const memory& scratch) const;
  };
  ConvPrim make_conv(const ConvW& w, const memory::desc& src_md, const memory::desc& dst_md, bool sum, bool relu,
                     dt weights_dt, float sum_scale = 1.0f);
  void note_scratchpad(const memory::desc& md) { scratch_bytes_ = std::max(scratch_bytes_, md.get_size()); }

  // Steps record what to run; memory handles are resolved when slots are allocated (finalize).
  using Step = std::function<void(dnnl::stream&)>;

  void* slot_ptr(int slot) { return base_ + slot_off_.at(slot); }
  void* plain_ptr(int i) { return need_plain_bytes_ ? base_ + plain_off_.at(i) : nullptr; }
  void* cols_ptr() { return base_ + cols_off_; }
  float* plain_f(int i) { return static_cast<float*>(plain_ptr(i)); }
  void need_plain(size_t bytes) { need_plain_bytes_ = std::max(need_plain_bytes_, bytes); }

  void reorder_step(const memory::desc& src_md, std::function<void*()> src_ptr, const memory::desc& dst_md,
                    std::function<void*()> dst_ptr);
  // conv(src) [+ sum_scale * existing dst] [ReLU] -> dst, with GN/LN handled on plain copies.
  void conv_step(const ConvW& w, const Act& src, const Act& dst, bool sum, bool relu, float sum_scale = 1.0f);
  // A float32 convolution (no norm) between plain buffers.
  void plain_conv_step(const ConvW& w, const memory::dims& src_dims, int src, const memory::dims& dst_dims, int dst);
  static ConvW w_no_norm(const ConvW& w) {
    ConvW c = w;
    c.norm.clear();
    return c;
  }
  // plain buffer `i` (float32 NCHW, dims of `a`) <-> activation a
  void to_plain(const Act& a, int i);
  void from_plain(int i, const Act& a);
  // plain 0 holds a convolution's output with dst's dims: apply w's norm, add sum_scale * dst when
  // `sum`, ReLU, and store into dst.
  void finish_plain(const ConvW& w, const Act& dst, bool sum, bool relu, float sum_scale = 1.0f);
  // The deformable conv2 of a DeformBottleneckBlock.
  void deform_step(const BlockW& b, const Act& src, const Act& dst);
  // dst <- src (same dims), e.g. a held map that a block would otherwise accumulate into.
  void copy_step(const Act& src, const Act& dst);
  // The activation, as float32 NCHW, into the output buffer `name` of the frame.
  void emit(const std::string& name, const Act& a);

  // The buffers' layout, once the whole network is planned: in `workspace` (shared with the engine's
  // other plans; bind() before each run), or, without one, in the plan's own allocation.
  void finalize(Workspace* workspace = nullptr);
  // Points the plan's buffers into its workspace (grown if this plan needs more).
  void bind();
  size_t workspace_bytes() const { return total_bytes_; }

  std::vector<Step> steps_;
  std::vector<Output> outputs_;
  std::map<std::string, int> impls_;  // kernel name -> count of convolutions using it

  ConvAlgorithm algo_;
  std::string machine_;
  // float32 3x3 stride-1 convolutions that have a Winograd kernel here, and those that run it.
  int winograd_eligible_ = 0, winograd_used_ = 0;
  dnnl::engine eng_;
  dt act_dt_;  // the data type of the activations new_act() makes
  tag act_tag_;
  PackedWeights* packed_ = nullptr;
  std::vector<bool> slot_busy_, slot_held_;
  std::vector<size_t> slot_bytes_;  // what each slot must hold (the largest activation it backs)
  std::vector<size_t> slot_off_, plain_off_;  // offsets in the workspace
  size_t cols_off_ = 0, scratch_off_ = 0, total_bytes_ = 0;
  Workspace own_workspace_;
  Workspace* workspace_ = nullptr;
  char* base_ = nullptr;
  size_t need_plain_bytes_ = 0, cols_bytes_ = 0, scratch_bytes_ = 0;
  memory scratch_mem_;
  // Output buffers of the current frame (bound by the engine before running the steps).
  std::vector<float*> out_ptrs_;
};

// ---------------------------------------------------------------------------------------------
// The FPN (onednn_fpn.cpp).

struct FpnW {
  FpnLevels levels;
  std::vector<std::string> names;  // the p-levels of output_shape(), high to low resolution
  std::vector<ConvW> lateral, output;  // in in_features order; avg: lateral[0 .. n-2] pre-scaled by 0.5
  bool avg = false;
  // GroupNorm/LayerNorm: the FPN's levels stay float32 whatever the precision. Convolutions followed
  // by these norms run in float32 anyway (as the ResNet's in bf16); from float32 levels they use the
  // blocked kernels instead of plain NCHW copies, and no bf16 rounding comes between the norms.
  bool f32_levels = false;
  TopBlockKind top = TopBlockKind::None;
  std::string top_in_feature;  // LastLevelP6P7: the bottom-up map p6 reads ("res5")
  ConvW p6, p7;
  explicit FpnW(const FPN& fpn);
  // The bottom-up maps the FPN reads (in_features and the top block's input).
  std::vector<std::string> inputs() const;
};

// Plans detectron2's FPN.forward on the bottom-up maps (held activations, each released here) and
// emits the p-levels `wanted` names. ShapeError (check_fpn_level_sizes) when the levels do not halve.
void plan_fpn(Plan& p, const FpnW& f, const std::map<std::string, Plan::Act>& bottom_up,
              const std::function<bool(const std::string&)>& wanted);

}  // namespace backbone::detail::onednn
