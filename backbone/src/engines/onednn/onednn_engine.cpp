// SPDX-License-Identifier: Apache-2.0
// The oneDNN engine: this project's own route to oneDNN (libdnnl), without LibTorch.
//
// At load time every BatchNorm/FrozenBN is folded into its convolution (double precision). For each
// input shape a plan is built once and replayed for every frame of that shape:
//  - activations stay in one oneDNN layout (blocked nChw16c, see act_tag_) and one data type
//    (f32, or bf16 on CPUs with AVX-512), so no reorder runs between layers;
//  - weights are reordered once per plan into the layout the chosen kernel wants (pre-packed);
//  - each convolution carries its bias and ReLU as post-ops, and the last convolution of a block
//    adds the shortcut and applies the ReLU in the same pass (sum + eltwise post-ops, in place);
//  - activations live in a few buffers reused layer after layer, scratchpads in one buffer,
//    the output levels in a pool recycled once the caller drops them: after warm-up a frame
//    allocates no buffer (only oneDNN's small per-call argument objects);
//  - the OpenMP pool of oneDNN is sized to the engine's threads in the calling thread and kept.
// GroupNorm, LayerNorm, the deformable convolution (this project's CPU im2col + a oneDNN 1x1
// convolution) and the classifier head run on plain NCHW float32 copies, which costs reorders
// but keeps them exact. An FPN on top (onednn_fpn.cpp) reads the bottom-up maps in place and runs
// in the same plan. The folded model and the Plan are in onednn_plan.h.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <sstream>
#include <string_view>
#include <tuple>

#include "backbone/error.h"
#include "core/tuning_cache.h"
#include "engines/onednn/onednn_plan.h"
#include "engines/onednn/onednn_tune.h"

namespace backbone::detail {
namespace onednn {
namespace {

// ---------------------------------------------------------------------------------------------

class OneDnnEngine final : public Engine {
 public:
  OneDnnEngine(const ResNet& model, const FPN* fpn, const EngineOptions& options)
      : eng_(dnnl::engine::kind::cpu, 0),
        threads_(engine_threads(options)),
        precision_(options.precision),
        algo_(options.conv_algorithm),
        machine_(machine_key(threads_)) {
    if (!options.device.is_cpu())
      throw DeviceError("device " + options.device.str() + " is not available to the oneDNN engine: it runs on the cpu");
    isa_ = dnnl::get_effective_cpu_isa();
    if (precision_ == Precision::Float16)
      throw UnsupportedError("oneDNN engine: precision fp16 is not supported on the CPU; use fp32 or bf16");
    if (precision_ == Precision::BFloat16 && !has_avx512(isa_))
      throw UnsupportedError(std::string("oneDNN engine: precision bf16 needs a CPU with AVX-512 (oneDNN ISA "
                                         "avx512_core or newer), found ") +
                             isa_name(isa_) + "; use fp32");
    if (!has_avx512(isa_)) bf16_blocker_ = std::string("bf16 needs AVX-512, found ") + isa_name(isa_);
    stem_ = fold(model.stem().conv1);
    in_channels_ = model.stem().in_channels();
    for (const auto& stage : model.stages()) {
      std::vector<BlockW> blocks;
      for (const auto& b : stage) {
        BlockW bw;
        bw.kind = b->kind();
        if (bw.kind == BlockKind::BasicBlock) {
          const auto& bb = static_cast<const BasicBlock&>(*b);
          if (bb.shortcut) bw.shortcut = fold(*bb.shortcut);
          bw.conv1 = fold(bb.conv1);
          bw.conv2 = fold(bb.conv2);
        } else {
          const auto& bb = static_cast<const BottleneckBlock&>(*b);
          if (bw.kind == BlockKind::DeformBottleneckBlock) {
            bf16_blocker_ = "not with deformable convolutions";
            if (precision_ == Precision::BFloat16)
              // Measured on the deformable goldens: bf16 activations move the sampling points enough
              // to put the features 2-5% (of max |fp32|) off fp32, even with the deformable stages and
              // the offsets in float32, beyond the bf16 bound of 2e-2.
              throw UnsupportedError("oneDNN engine: precision bf16 is not supported for deformable convolutions "
                                     "(DEFORM_ON_PER_STAGE): their features move beyond 2e-2 * max |fp32|; use fp32");
            const auto& d = static_cast<const DeformBottleneckBlock&>(bb);
            bw.conv2_offset = fold(d.conv2_offset);
            bw.deform_modulated = d.deform_modulated;
            bw.deform_num_groups = d.deform_num_groups;
          }
          if (bb.shortcut) bw.shortcut = fold(*bb.shortcut);
          bw.conv1 = fold(bb.conv1);
          bw.conv2 = fold(bb.conv2);
          bw.conv3 = fold(bb.conv3);
        }
        blocks.push_back(std::move(bw));
      }
      stages_.push_back(std::move(blocks));
    }
    stage_names_ = model.stage_names();
    out_features_ = model.out_features();
    if (fpn) {
      // The maps returned are the FPN's selection (p-levels, and bottom-up maps such as res5).
      fpn_.emplace(*fpn);
      out_features_ = fpn->out_features();
    }
    if (model.num_classes()) {
      const Tensor lw = model.linear_weight.to(DType::Float32).contiguous();
      const Tensor lb = model.linear_bias.to(DType::Float32).contiguous();
      linear_weight_.assign(lw.data_ptr<float>(), lw.data_ptr<float>() + lw.numel());
      linear_bias_.assign(lb.data_ptr<float>(), lb.data_ptr<float>() + lb.numel());
      num_classes_ = lb.numel();
    }
  }

  std::string name() const override { return "onednn"; }
  Device device() const override { return Device::cpu(); }

  std::string describe() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    const dnnl_version_t* v = dnnl_version();
    const bool bf16 = last_plan_ ? last_plan_->act_dt_ == dt::bf16 : precision_ == Precision::BFloat16;
    std::ostringstream o;
    o << "onednn " << (last_plan_ || precision_ != Precision::Auto ? (bf16 ? "bf16" : "fp32") : "auto") << " on cpu, "
      << threads_ << " threads (oneDNN " << v->major << "." << v->minor << "." << v->patch << ", ISA "
      << isa_name(isa_) << ", activations nChw16c " << (bf16 ? "bf16" : "f32")
      << "; BN folded, weights pre-packed, conv+bias+sum+ReLU fused";
    o << precision_note();
    if (!bf16 && algo_ == ConvAlgorithm::Winograd) {
      // oneDNN 3.x has no CPU Winograd kernels left: the convolutions fall back to direct.
      o << (last_plan_ && last_plan_->winograd_used_ == 0
                ? ", Winograd 3x3 requested (no Winograd kernel in this oneDNN for these shapes: direct)"
                : ", Winograd 3x3");
    }
    if (!bf16 && algo_ == ConvAlgorithm::Auto && last_plan_) {
      if (last_plan_->winograd_eligible_ == 0)
        o << ", 3x3 convolutions direct (no Winograd kernel in this oneDNN for these shapes)";
      else
        o << ", Winograd 3x3 on " << last_plan_->winograd_used_ << " of the " << last_plan_->winograd_eligible_
          << " layers that have it (measured faster per layer shape on this CPU, each within 1e-5 of the direct output)";
    }
    if (fpn_)
      o << "; FPN (" << (fpn_->avg ? "avg" : "sum")
        << "): each lateral 1x1 convolution sums into its level's nearest 2x upsampled top-down map";
    if (!plans_.empty())
      o << "; " << plans_.size() << " input shape" << (plans_.size() > 1 ? "s" : "") << " planned, sharing "
        << (packed_.bytes() + 512) / 1024 << " KiB of packed weights and one "
        << (workspace_.size() + 512) / 1024 << " KiB workspace";
    if (last_plan_) {
      o << "; convolution kernels:";
      for (const auto& [impl, count] : last_plan_->impls_) o << " " << impl << " x" << count;
    } else {
      o << "; convolution kernels are chosen per input shape at the first frame";
    }
    o << ")";
    return o.str();
  }

  FeatureMaps forward(const Tensor& images) override {
    const Tensor host = engine_input(images, in_channels_);
    std::lock_guard<std::mutex> lock(mutex_);
    omp_set_num_threads(threads_);
    Plan& plan = plan_for(host.shape());
    plan.bind();
    last_plan_ = &plan;

    // Output buffers: reuse the ones the caller has dropped.
    std::vector<std::shared_ptr<void>> owners;
    std::vector<float*> outs;
    for (size_t i = 0; i < plan.outputs_.size(); ++i) {
      size_t bytes = sizeof(float);
      for (auto d : plan.outputs_[i].dims) bytes *= static_cast<size_t>(d);
      auto& pool = out_pool_[plan.outputs_[i].name];
      std::shared_ptr<void> owner;
      for (auto& o : pool)
        if (o.first == bytes && o.second.use_count() == 1) {
          owner = o.second;
          break;
        }
      if (!owner) {
        // Free buffers of other sizes (another batch or frame size) go: the pool holds what the
        // current shapes reuse, not one set per shape ever seen.
        pool.erase(std::remove_if(pool.begin(), pool.end(),
                                  [bytes](const auto& o) { return o.first != bytes && o.second.use_count() == 1; }),
                   pool.end());
        owner = aligned_alloc_shared(bytes);
        pool.emplace_back(bytes, owner);
        if (pool.size() > 8) pool.erase(pool.begin());  // callers that keep many frames: do not hoard
      }
      owners.push_back(owner);
      outs.push_back(static_cast<float*>(owner.get()));
    }
    run_plan(plan, host.data(), outs);

    FeatureMaps result;
    for (const auto& name : out_features_)
      for (size_t i = 0; i < plan.outputs_.size(); ++i)
        if (plan.outputs_[i].name == name)
          result.emplace_back(name, Tensor::from_blob(owners[i].get(), plan.outputs_[i].dims, DType::Float32,
                                                      Device::cpu(), owners[i]));
    return result;
  }

 private:
  // Runs `plan` on `input` (float32 NCHW of the plan's shape) into `outs` (one per plan output).
  void run_plan(Plan& plan, const void* input, const std::vector<float*>& outs) {
    plan.bind();
    plan.out_ptrs_ = outs;
    input_ptr_ = const_cast<void*>(input);
    dnnl::stream s(eng_);
    for (auto& step : plan.steps_) step(s);
    s.wait();
    input_ptr_ = nullptr;
  }

  Plan& plan_for(const Shape& shape) {
    auto it = plans_.find(shape);
    if (it != plans_.end()) return *it->second;
    if (plans_.size() >= 4) plans_.erase(plans_.begin());  // bound the memory of shape changes
    dt act = precision_ == Precision::BFloat16 ? dt::bf16 : dt::f32;
    if ((precision_ == Precision::Auto || precision_ == Precision::BFloat16) && bf16_blocker_.empty()) {
      const PrecisionChoice& c = precision_choice(shape);
      if (precision_ == Precision::Auto) act = c.bf16 ? dt::bf16 : dt::f32;
    }
    auto plan = build(shape, act, &packed_, &workspace_);
    return *(plans_[shape] = std::move(plan));
  }

  // What the model is, for the tuning cache's keys: its layers' shapes and weights, its outputs.
  std::string model_key() const {
    size_t h = 0;
    auto mix = [&h](size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    auto add = [&](const ConvW& w) {
      for (int64_t x : {w.out, w.in, w.k, w.stride, w.pad, w.dilation, w.groups}) mix(static_cast<size_t>(x));
      mix(std::hash<std::string_view>()(std::string_view(reinterpret_cast<const char*>(w.weight.data()),
                                                         w.weight.size() * sizeof(float))));
      mix(std::hash<std::string>()(w.norm));
    };
    size_t layers = 1;
    add(stem_);
    for (const auto& stage : stages_)
      for (const BlockW& b : stage) {
        for (const ConvW* w : {&b.conv1, &b.conv2, &b.conv3, &b.conv2_offset}) add(*w);
        if (b.shortcut) add(*b.shortcut);
        layers += b.kind == BlockKind::BasicBlock ? 2 : 3;
      }
    if (fpn_) {
      for (const auto& w : fpn_->lateral) add(w);
      for (const auto& w : fpn_->output) add(w);
      add(fpn_->p6);
      add(fpn_->p7);
    }
    for (const auto& n : out_features_) mix(std::hash<std::string>()(n));
    char buf[64];
    std::snprintf(buf, sizeof buf, "%zu layers %016zx", layers, h);
    return buf;
  }

  struct PrecisionChoice {
    bool bf16 = false;
    double fp32_ms = 0, bf16_ms = 0, err = 0;
    bool measured = false;
  };

  // fp32 against bf16 for the model at this input shape: from the tuning cache, else measured (both
  // plans on the same seeded input, outputs compared, the best of 3 to 10 alternated rounds each after a
  // warm-up) and recorded.
  // precision auto takes bf16 where it ran faster by kBf16MinGain and stayed within 2e-2 * max
  // |fp32| on every output.
  const PrecisionChoice& precision_choice(const Shape& shape) {
    auto known = choices_.find(shape);
    if (known != choices_.end()) return known->second;
    if (model_key_.empty()) model_key_ = model_key();  // hashes every weight: only for bf16 and auto
    const std::string key = "onednn precision|" + machine_ + "|" + model_key_ + "|input " + shape_str(shape);
    PrecisionChoice c;
    bool have = false;
    if (auto v = TuningCache::instance().get(key)) {
      const TuningValue t = parse_tuning_value(*v);
      if (t.choice == "bf16" || t.choice == "fp32") {
        have = true;
        c.bf16 = t.choice == "bf16";
        c.fp32_ms = t.figure("fp32_ms");
        c.bf16_ms = t.figure("bf16_ms");
        c.err = t.figure("err");
      }
    }
    if (!have) {
      c = measure_precisions(shape);
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s fp32_ms=%.3f bf16_ms=%.3f err=%.2e", c.bf16 ? "bf16" : "fp32", c.fp32_ms,
                    c.bf16_ms, c.err);
      TuningCache::instance().put(key, buf);
    }
    return choices_[shape] = c;
  }

  PrecisionChoice measure_precisions(const Shape& shape) {
    // Trial plans with their own weights and workspaces, freed after: the plan that runs is built
    // afterwards into the engine's shared ones.
    PackedWeights trial_packed;
    Workspace ws32, ws16;
    auto p32 = build(shape, dt::f32, &trial_packed, &ws32);
    auto p16 = build(shape, dt::bf16, &trial_packed, &ws16);
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    std::vector<float> input(n);
    std::mt19937 gen(3);
    std::normal_distribution<float> nd(0.0f, 50.0f);  // about the spread of a mean-subtracted image
    for (float& x : input) x = nd(gen);
    auto outputs = [](const Plan& p) {
      std::vector<std::vector<float>> o;
      for (const auto& out : p.outputs_) {
        size_t k = 1;
        for (auto d : out.dims) k *= static_cast<size_t>(d);
        o.emplace_back(k);
      }
      return o;
    };
    auto o32 = outputs(*p32), o16 = outputs(*p16);
    auto ptrs = [](std::vector<std::vector<float>>& o) {
      std::vector<float*> v;
      for (auto& x : o) v.push_back(x.data());
      return v;
    };
    auto timed = [&](Plan& p, std::vector<std::vector<float>>& o) {
      const auto t0 = std::chrono::steady_clock::now();
      run_plan(p, input.data(), ptrs(o));
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    PrecisionChoice c;
    c.measured = true;
    timed(*p32, o32);  // warm-up (first touch of the buffers)
    timed(*p16, o16);
    for (size_t i = 0; i < o32.size(); ++i)
      c.err = std::max(c.err, relative_max_diff(o32[i].data(), o16[i].data(), o32[i].size()));
    // The best of alternated rounds: at least 3, more (up to 10) while they take under a second, so
    // that a moment of other load on the machine does not decide.
    std::tie(c.fp32_ms, c.bf16_ms) =
        best_of_alternated([&] { return timed(*p32, o32); }, [&] { return timed(*p16, o16); }, 1000.0);
    c.bf16 = c.bf16_ms < (1.0 - kBf16MinGain) * c.fp32_ms && c.err <= kBf16Bound;
    return c;
  }

  // ", precision auto: bf16 at 1x3x224x224 (...)" / ", bf16 measured slower than fp32 ..." or "".
  std::string precision_note() const {
    if (precision_ != Precision::Auto && precision_ != Precision::BFloat16) return "";
    if (!bf16_blocker_.empty())
      return precision_ == Precision::Auto ? ", precision auto: fp32 (" + bf16_blocker_ + ")" : "";
    if (!last_plan_) return precision_ == Precision::Auto ? ", precision auto: chosen per input shape at the first frame" : "";
    const Shape* shape = nullptr;
    for (const auto& [s, p] : plans_)
      if (p.get() == last_plan_) shape = &s;
    auto it = shape ? choices_.find(*shape) : choices_.end();
    if (it == choices_.end()) return "";
    const PrecisionChoice& c = it->second;
    char figures[200];
    std::snprintf(figures, sizeof figures, "fp32 %.1f ms, bf16 %.1f ms, bf16 off fp32 by %.1e of max |fp32|%s",
                  c.fp32_ms, c.bf16_ms, c.err, c.measured ? ", measured now" : ", from the tuning cache");
    if (precision_ == Precision::Auto)
      return std::string(", precision auto: ") + (c.bf16 ? "bf16" : "fp32") + " at " + shape_str(*shape) + " (" +
             figures + ")";
    if (c.bf16_ms >= c.fp32_ms)
      return ", bf16 measured slower than fp32 on this CPU at " + shape_str(*shape) + " (" + figures +
             "): precision auto would run fp32";
    return "";
  }

  bool wanted(const std::string& n) const {
    return std::find(out_features_.begin(), out_features_.end(), n) != out_features_.end();
  }

  std::unique_ptr<Plan> build(const Shape& shape, dt act_dt, PackedWeights* packed, Workspace* workspace) {
    auto plan = std::make_unique<Plan>(eng_, act_dt, act_tag_, algo_, machine_, packed);
    Plan& p = *plan;
    using Act = Plan::Act;

    // Input (float32 NCHW, the caller's memory) -> the stem's source layout.
    const memory::dims in_dims = {shape[0], shape[1], shape[2], shape[3]};
    const memory::desc in_md(in_dims, dt::f32, tag::nchw);
    Act stem_out = p.new_act(Plan::conv_out_dims(in_dims, stem_));
    {
      // The stem reads a plain (NCHW) source of its dtype: its 3 channels would be padded to 16 in
      // a blocked layout.
      const memory::desc src_md(in_dims, act_dt, tag::nchw);
      auto conv = std::make_shared<Plan::ConvPrim>(
          p.make_conv(stem_, src_md, p.act_md(stem_out), false, stem_.norm.empty(), act_dt));
      auto src_buf = std::make_shared<std::shared_ptr<void>>(
          act_dt == dt::f32 ? nullptr : aligned_alloc_shared(src_md.get_size()));
      if (act_dt != dt::f32) {
        p.reorder_step(in_md, [this] { return input_ptr_; }, src_md, [src_buf] { return src_buf->get(); });
      }
      const int ds = stem_out.slot;
      const memory::desc dmd = p.act_md(stem_out);
      Plan* pp = &p;
      p.steps_.push_back([this, pp, conv, src_buf, src_md, ds, dmd, act_dt](dnnl::stream& s) {
        void* src_ptr = act_dt == dt::f32 ? input_ptr_ : src_buf->get();
        memory src(src_md, eng_, src_ptr), dst(dmd, eng_, pp->slot_ptr(ds));
        conv->run(s, src, dst, pp->scratch_mem_);
      });
      if (!stem_.norm.empty()) {
        p.to_plain(stem_out, 0);
        p.finish_plain(stem_, stem_out, false, true);
      }
    }
    // Max pooling 3x3, stride 2, padding 1.
    auto pool_dims = [](const memory::dims& d) {
      return memory::dims{d[0], d[1], (d[2] + 2 - 3) / 2 + 1, (d[3] + 2 - 3) / 2 + 1};
    };
    Act x = p.new_act(pool_dims(stem_out.dims));
    {
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
#if DNNL_VERSION_MAJOR >= 3
      // oneDNN 3.0: no op descriptor, and pooling takes a dilation (0: none).
      dnnl::pooling_forward::primitive_desc pd(eng_, dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                               p.act_md(stem_out), p.act_md(x), {2, 2}, {3, 3}, {0, 0}, {1, 1},
                                               {1, 1}, attr);
#else
      dnnl::pooling_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                       p.act_md(stem_out), p.act_md(x), {2, 2}, {3, 3}, {1, 1}, {1, 1});
      dnnl::pooling_forward::primitive_desc pd(desc, attr, eng_);
#endif
      p.note_scratchpad(pd.scratchpad_desc());
      auto prim = dnnl::pooling_forward(pd);
      const int ss = stem_out.slot, ds = x.slot;
      const memory::desc smd = p.act_md(stem_out), dmd = p.act_md(x);
      Plan* pp = &p;
      p.steps_.push_back([this, pp, prim, ss, ds, smd, dmd](dnnl::stream& s) {
        memory src(smd, eng_, pp->slot_ptr(ss)), dst(dmd, eng_, pp->slot_ptr(ds));
        prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, pp->scratch_mem_}});
      });
      p.release(stem_out);
    }
    if (wanted("stem")) p.emit("stem", x);
    // The bottom-up maps the FPN reads, held (never overwritten) until its top-down pass.
    const std::vector<std::string> fpn_inputs = fpn_ ? fpn_->inputs() : std::vector<std::string>{};
    std::map<std::string, Act> bottom_up;

    for (size_t si = 0; si < stages_.size(); ++si) {
      for (const BlockW& b : stages_[si]) {
        const ConvW& last = b.kind == BlockKind::BasicBlock ? b.conv2 : b.conv3;
        const memory::dims out_dims = Plan::conv_out_dims(
            b.kind == BlockKind::BasicBlock
                ? Plan::conv_out_dims(x.dims, b.conv1)
                : Plan::conv_out_dims(Plan::conv_out_dims(x.dims, b.conv1), b.conv2),
            last);
        // The shortcut: a projection into a new slot, or the input itself (accumulated in place).
        Act out = x;
        if (b.shortcut) {
          out = p.new_act(out_dims);
          p.conv_step(*b.shortcut, x, out, false, false);
        } else if (p.held(x)) {
          out = p.new_act(out_dims);  // the identity shortcut would accumulate into a map the FPN reads
          p.copy_step(x, out);
        }
        Act t1 = p.new_act(Plan::conv_out_dims(x.dims, b.conv1));
        p.conv_step(b.conv1, x, t1, false, true);
        if (b.shortcut) p.release(x);
        if (b.kind == BlockKind::BasicBlock) {
          p.conv_step(b.conv2, t1, out, true, true);
          p.release(t1);
        } else {
          Act t2 = p.new_act(Plan::conv_out_dims(t1.dims, b.conv2));
          if (b.kind == BlockKind::DeformBottleneckBlock) p.deform_step(b, t1, t2);
          else p.conv_step(b.conv2, t1, t2, false, true);
          p.release(t1);
          p.conv_step(b.conv3, t2, out, true, true);
          p.release(t2);
        }
        x = out;
      }
      if (wanted(stage_names_[si])) p.emit(stage_names_[si], x);
      if (std::find(fpn_inputs.begin(), fpn_inputs.end(), stage_names_[si]) != fpn_inputs.end()) {
        p.hold(x);
        bottom_up[stage_names_[si]] = x;
      }
    }
    if (fpn_) plan_fpn(p, *fpn_, bottom_up, [this](const std::string& n) { return wanted(n); });
    if (num_classes_) {
      // Global average pooling and the linear layer on a plain float32 copy of the last stage.
      p.to_plain(x, 0);
      const size_t idx = p.outputs_.size();
      p.outputs_.push_back({"linear", {x.dims[0], num_classes_}});
      const memory::dims d = x.dims;
      Plan* pp = &p;
      p.steps_.push_back([this, pp, d, idx](dnnl::stream& s) {
        s.wait();
        const float* a = pp->plain_f(0);
        float* out = pp->out_ptrs_[idx];
        const int64_t c = d[1], hw = d[2] * d[3];
        std::vector<double> avg(static_cast<size_t>(c));
        for (int64_t i = 0; i < d[0]; ++i) {
          for (int64_t ch = 0; ch < c; ++ch) {
            double sum = 0;
            for (int64_t j = 0; j < hw; ++j) sum += a[(i * c + ch) * hw + j];
            avg[ch] = sum / static_cast<double>(hw);
          }
          for (int64_t k = 0; k < num_classes_; ++k) {
            double v = linear_bias_[k];
            for (int64_t ch = 0; ch < c; ++ch) v += linear_weight_[k * c + ch] * avg[ch];
            out[i * num_classes_ + k] = static_cast<float>(v);
          }
        }
      });
    }
    p.finalize(workspace);
    return plan;
  }

  dnnl::engine eng_;
  int threads_;
  Precision precision_;  // as asked: fp32, bf16 or auto (chosen per input shape)
  ConvAlgorithm algo_;
  std::string machine_;    // machine_key(): the tuning cache's keys
  std::string model_key_;  // model_key(), at the first precision measurement
  std::string bf16_blocker_;  // why bf16 cannot run this model here ("" when it can)
  // precision auto: bf16 within this bound of max |fp32| on every output (bf16's documented bound),
  // and faster than fp32 by this fraction.
  static constexpr double kBf16Bound = 2e-2;
  static constexpr double kBf16MinGain = 0.05;
  dnnl::cpu_isa isa_;
  // nChw16c: oneDNN's direct AVX-512 kernels (jit, jit_1x1) read and write it, and the stem takes
  // its 3-channel plain source. (nhwc was measured 40x slower here: oneDNN 2.6 has no optimised
  // 7x7 stem kernel for it and falls back to its reference convolution.)
  tag act_tag_ = tag::nChw16c;
  ConvW stem_;
  int64_t in_channels_ = 3;
  std::vector<std::vector<BlockW>> stages_;
  std::vector<std::string> stage_names_, out_features_;
  std::vector<float> linear_weight_, linear_bias_;
  int64_t num_classes_ = 0;
  std::optional<FpnW> fpn_;  // the FPN on top of the ResNet, when the engine runs one

  mutable std::mutex mutex_;
  PackedWeights packed_;  // before plans_: plans hold its memory objects
  Workspace workspace_;   // the running plan's buffers (one plan runs at a time)
  std::map<Shape, std::unique_ptr<Plan>> plans_;
  std::map<Shape, PrecisionChoice> choices_;  // bf16 and auto: fp32 against bf16 per input shape
  Plan* last_plan_ = nullptr;
  std::map<std::string, std::vector<std::pair<size_t, std::shared_ptr<void>>>> out_pool_;
  void* input_ptr_ = nullptr;
};

}  // namespace
}  // namespace onednn

std::unique_ptr<Engine> create_onednn_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options) {
  return std::make_unique<onednn::OneDnnEngine>(model, fpn, options);
}

}  // namespace backbone::detail
