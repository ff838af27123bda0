// SPDX-License-Identifier: Apache-2.0
#include "engines/onednn/onednn_tune.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <tuple>

#include "core/tuning_cache.h"

namespace backbone::detail::onednn {
namespace {

std::string dims_str(const memory::dims& d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) s += (i ? "x" : "") + std::to_string(d[i]);
  return s;
}

void fill_normal(const memory& m, uint32_t seed) {
  float* p = static_cast<float*>(m.get_data_handle());
  const size_t n = m.get_desc().get_size() / sizeof(float);
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (size_t i = 0; i < n; ++i) p[i] = nd(gen);
}

double now_us() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
#if DNNL_VERSION_MAJOR < 3
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";  // Xeon Phi: gone in oneDNN 3.0
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
#endif
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    default: return "generic";
  }
}

bool has_avx512(dnnl::cpu_isa isa) {
  return isa == dnnl::cpu_isa::avx512_core || isa == dnnl::cpu_isa::avx512_core_vnni ||
         isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

double relative_max_diff(const float* ref, const float* out, size_t n) {
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < n; ++i) {
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref[i])));
    const double d = std::fabs(static_cast<double>(ref[i]) - out[i]);
    max_diff = std::isnan(d) ? INFINITY : std::max(max_diff, d);
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

std::pair<double, double> best_of_alternated(const std::function<double()>& a, const std::function<double()>& b,
                                             double budget) {
  double best_a = INFINITY, best_b = INFINITY, spent = 0;
  for (int r = 0; r < 3 || (r < 10 && spent < budget); ++r) {
    const double first = r % 2 ? b() : a();
    const double second = r % 2 ? a() : b();
    best_a = std::min(best_a, r % 2 ? second : first);
    best_b = std::min(best_b, r % 2 ? first : second);
    spent += first + second;
  }
  return {best_a, best_b};
}

std::string machine_key(int threads) {
  const dnnl_version_t* v = dnnl_version();
  std::ostringstream o;
  o << cpu_model_name() << ";oneDNN " << v->major << "." << v->minor << "." << v->patch << ";"
    << isa_name(dnnl::get_effective_cpu_isa()) << ";" << threads << " threads";
  return o.str();
}

WinogradChoice choose_winograd(const dnnl::engine& eng, const std::string& machine, const ConvW& w,
                               const dnnl::convolution_forward::primitive_desc& direct,
                               const dnnl::convolution_forward::primitive_desc& winograd, bool sum, bool relu) {
  const memory::desc src_md = direct.src_desc(), dst_md = direct.dst_desc();
#if DNNL_VERSION_MAJOR >= 3
  const memory::dims sd = src_md.get_dims();
#else
  const memory::dims sd = src_md.dims();
#endif
  const std::string key = "onednn conv3x3|" + machine + "|src " + dims_str(sd) + "|out " + std::to_string(w.out) +
                          "|pad " + std::to_string(w.pad) + (sum ? "|sum" : "") + (relu ? "|relu" : "");
  WinogradChoice c;
  if (auto v = TuningCache::instance().get(key)) {
    const TuningValue t = parse_tuning_value(*v);
    if (t.choice == "winograd" || t.choice == "direct") {
      c.winograd = t.choice == "winograd";
      c.direct_us = t.figure("direct_us");
      c.winograd_us = t.figure("winograd_us");
      c.rel_err = t.figure("err");
      return c;
    }
  }

  // Both primitives on the same seeded input, weights packed for each, outputs compared.
  dnnl::stream s(eng);
  memory src(src_md, eng), init(dst_md, eng), out_d(dst_md, eng), out_w(dst_md, eng);
  fill_normal(src, 1);
  fill_normal(init, 2);
  const int64_t g = w.groups;
  memory::dims wdims = g == 1 ? memory::dims{w.out, sd[1], w.k, w.k} : memory::dims{g, w.out / g, sd[1] / g, w.k, w.k};
  memory user_w(memory::desc(wdims, dt::f32, g == 1 ? tag::oihw : tag::goihw), eng, const_cast<float*>(w.weight.data()));
  memory wd(direct.weights_desc(), eng), ww(winograd.weights_desc(), eng);
  dnnl::reorder(user_w, wd).execute(s, user_w, wd);
  dnnl::reorder(user_w, ww).execute(s, user_w, ww);
  memory bias(memory::desc({w.out}, dt::f32, tag::x), eng);
  std::memcpy(bias.get_data_handle(), w.bias.data(), w.bias.size() * sizeof(float));
  const size_t scratch_bytes = std::max<size_t>({direct.scratchpad_desc().get_size(),
                                                 winograd.scratchpad_desc().get_size(), 1});
  memory scratch(memory::desc({static_cast<int64_t>(scratch_bytes)}, dt::u8, tag::x), eng);
  s.wait();
  const dnnl::convolution_forward pd(direct), pw(winograd);
  const size_t out_bytes = dst_md.get_size();
  auto run = [&](const dnnl::convolution_forward& p, const memory& weights, const memory& out) {
    if (sum) std::memcpy(out.get_data_handle(), init.get_data_handle(), out_bytes);
    const double t0 = now_us();
    p.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, out},
                  {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
    return now_us() - t0;
  };
  run(pd, wd, out_d);
  run(pw, ww, out_w);
  c.rel_err = relative_max_diff(static_cast<const float*>(out_d.get_data_handle()),
                                static_cast<const float*>(out_w.get_data_handle()), out_bytes / sizeof(float));
  // The best of alternated rounds: at least 3, more (up to 10) while they take under 0.2 s.
  std::tie(c.direct_us, c.winograd_us) =
      best_of_alternated([&] { return run(pd, wd, out_d); }, [&] { return run(pw, ww, out_w); }, 2e5);
  c.winograd = c.winograd_us < (1.0 - kWinogradMinGain) * c.direct_us && c.rel_err <= kWinogradLayerBound;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s direct_us=%.1f winograd_us=%.1f err=%.2e", c.winograd ? "winograd" : "direct",
                c.direct_us, c.winograd_us, c.rel_err);
  TuningCache::instance().put(key, buf);
  return c;
}

}  // namespace backbone::detail::onednn
