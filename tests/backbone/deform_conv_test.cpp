// SPDX-License-Identifier: Apache-2.0
// ops::deform_conv2d on the CPU against torchvision.ops.deform_conv2d (tests/data/make_deform.py),
// every argument check of the front end, the exposed deformable_im2col layout and the GEMM.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backbone/error.h"
#include "backbone/npy.h"
#include "backbone/ops.h"
#include "backbone/tensor.h"
#include "deform_cases.h"
#include "test_util.h"
#include "ops/cpu/deform_conv2d_kernel.h"
#include "ops/cpu/gemm.h"

namespace backbone {
namespace {

using namespace backbone::test;


Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape);
  std::normal_distribution<float> dist(0.0f, scale);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

class DeformConvGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(DeformConvGolden, MatchesTorchvision) {
  const DeformCase c = load_deform_case(GetParam());
  const Tensor out = ops::deform_conv2d(c.input, c.offset, c.weight, c.mask, c.bias, c.params);
  ASSERT_EQ(shape_str(out.shape()), shape_str(c.out.shape()));
  EXPECT_TRUE(out.device().is_cpu());
  const double err = max_abs_diff(out, c.out);
  const double tol = 1e-5 * max_abs(c.out) + 1e-6;
  std::ostringstream err_text;
  err_text << std::scientific << err;
  RecordProperty("max_abs_error", err_text.str());
  EXPECT_LE(err, tol) << GetParam() << ": max abs error " << err << " (max |ref| " << max_abs(c.out) << ")";
}

INSTANTIATE_TEST_SUITE_P(Cases, DeformConvGolden, ::testing::ValuesIn(kDeformCases),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(DeformConv, CaseListMatchesGenerator) {
  std::ifstream in(deform_data_path("cases.txt"));
  ASSERT_TRUE(in.good()) << deform_data_path("cases.txt");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '#') names.push_back(line);
  EXPECT_EQ(names, kDeformCases);
}

// Strided (non-contiguous) inputs give the same result as contiguous ones.
TEST(DeformConv, NonContiguousInputs) {
  const DeformCase c = load_deform_case("groups2_dg2_mask_bias");
  // Store input as [N, C, W, H] and view it as [N, C, H, W] through strides.
  const int64_t n = c.input.size(0), ch = c.input.size(1), h = c.input.size(2), w = c.input.size(3);
  auto storage = std::make_shared<std::vector<float>>(static_cast<std::size_t>(n * ch * h * w));
  const float* src = c.input.data_ptr<float>();
  for (int64_t b = 0; b < n * ch; ++b)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) (*storage)[b * h * w + x * h + y] = src[(b * h + y) * w + x];
  const Tensor strided = Tensor::from_blob(storage->data(), c.input.shape(), DType::Float32, Device::cpu(), storage,
                                           {ch * h * w, h * w, 1, h});
  ASSERT_FALSE(strided.is_contiguous());
  const Tensor out = ops::deform_conv2d(strided, c.offset, c.weight, c.mask, c.bias, c.params);
  EXPECT_LE(max_abs_diff(out, c.out), 1e-5 * max_abs(c.out) + 1e-6);
}

TEST(DeformConv, EmptyBatch) {
  const Tensor input = Tensor::zeros({0, 4, 6, 6});
  const Tensor offset = Tensor::zeros({0, 18, 6, 6});
  const Tensor weight = Tensor::zeros({5, 4, 3, 3});
  ops::DeformConv2dParams p;
  p.pad_h = p.pad_w = 1;
  const Tensor out = ops::deform_conv2d(input, offset, weight, Tensor(), Tensor(), p);
  EXPECT_EQ(shape_str(out.shape()), "[0, 5, 6, 6]");
}

TEST(DeformConv, ConvOutputSize) {
  EXPECT_EQ(ops::conv_output_size(7, 3, 1, 1, 1), 7);
  EXPECT_EQ(ops::conv_output_size(9, 3, 2, 1, 1), 5);
  EXPECT_EQ(ops::conv_output_size(10, 3, 1, 2, 2), 10);
  EXPECT_EQ(ops::conv_output_size(224, 7, 2, 3, 1), 112);
  EXPECT_EQ(ops::conv_output_size(9, 1, 2, 0, 1), 5);
  // A padded input smaller than the dilated kernel: floor division, so never a positive size.
  EXPECT_EQ(ops::conv_output_size(3, 4, 2, 0, 1), 0);
  EXPECT_EQ(ops::conv_output_size(1, 3, 1, 0, 1), -1);
  EXPECT_THROW(ops::conv_output_size(7, 3, 0, 1, 1), ShapeError);
  EXPECT_THROW(ops::conv_output_size(7, 3, 1, -1, 1), ShapeError);
  EXPECT_THROW(ops::conv_output_size(7, 3, 1, 1, 0), ShapeError);
  EXPECT_THROW(ops::conv_output_size(7, 0, 1, 1, 1), ShapeError);
}

// ---- argument checks --------------------------------------------------------------------------

struct Args {
  Tensor input = Tensor::zeros({2, 4, 8, 7});
  Tensor offset = Tensor::zeros({2, 2 * 2 * 9, 8, 7});
  Tensor weight = Tensor::zeros({6, 2, 3, 3});
  Tensor mask = Tensor::zeros({2, 2 * 9, 8, 7});
  Tensor bias = Tensor::zeros({6});
  ops::DeformConv2dParams params = [] {
    ops::DeformConv2dParams p;
    p.pad_h = p.pad_w = 1;
    p.groups = 2;
    p.deformable_groups = 2;
    return p;
  }();
  Tensor run() const { return ops::deform_conv2d(input, offset, weight, mask, bias, params); }
};

// Runs the call with one change and expects a ShapeError whose message contains every fragment.
void expect_error(const std::function<void(Args&)>& change, const std::vector<std::string>& fragments) {
  Args args;
  change(args);
  try {
    args.run();
    ADD_FAILURE() << "no ShapeError; expected one containing '" << fragments.front() << "'";
  } catch (const ShapeError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("deform_conv2d: ", 0), 0u) << what;
    for (const auto& f : fragments) EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
  }
}

TEST(DeformConvArgs, ValidBaselineRuns) {
  Args args;
  const Tensor out = args.run();
  EXPECT_EQ(shape_str(out.shape()), "[2, 6, 8, 7]");
  // Zero input and weight, zero bias: all zero.
  EXPECT_EQ(max_abs(out), 0.0);
  args.mask = Tensor();
  args.bias = Tensor();
  EXPECT_EQ(shape_str(args.run().shape()), "[2, 6, 8, 7]");
}

TEST(DeformConvArgs, UndefinedTensors) {
  expect_error([](Args& a) { a.input = Tensor(); }, {"input is undefined"});
  expect_error([](Args& a) { a.offset = Tensor(); }, {"offset is undefined"});
  expect_error([](Args& a) { a.weight = Tensor(); }, {"weight is undefined"});
}

TEST(DeformConvArgs, DTypes) {
  expect_error([](Args& a) { a.input = a.input.to(DType::Float64); }, {"input must be float32, found float64"});
  expect_error([](Args& a) { a.offset = a.offset.to(DType::Float16); }, {"offset must be float32, found float16"});
  expect_error([](Args& a) { a.weight = a.weight.to(DType::Float64); }, {"weight must be float32, found float64"});
  expect_error([](Args& a) { a.mask = a.mask.to(DType::Float64); }, {"mask must be float32, found float64"});
  expect_error([](Args& a) { a.bias = a.bias.to(DType::Int64); }, {"bias must be float32, found int64"});
}

TEST(DeformConvArgs, Ranks) {
  expect_error([](Args& a) { a.input = Tensor::zeros({4, 8, 7}); }, {"input must be 4-D", "found shape [4, 8, 7]"});
  expect_error([](Args& a) { a.weight = Tensor::zeros({6, 18}); }, {"weight must be 4-D", "found shape [6, 18]"});
  expect_error([](Args& a) { a.offset = Tensor::zeros({2, 36, 56}); }, {"offset must be 4-D", "[2, 36, 56]"});
  expect_error([](Args& a) { a.mask = Tensor::zeros({2, 18, 56}); }, {"mask must be 4-D", "[2, 18, 56]"});
  expect_error([](Args& a) { a.bias = Tensor::zeros({1, 6}); }, {"bias must be 1-D", "[1, 6]"});
}

TEST(DeformConvArgs, Devices) {
  // Tagged cuda:0 but never touched: the device check comes first.
  static float dummy[4096];
  const auto on_cuda = [](const Tensor& t) {
    return Tensor::from_blob(dummy, t.shape(), DType::Float32, Device::cuda(0));
  };
  expect_error([&](Args& a) { a.offset = on_cuda(a.offset); }, {"offset is on cuda:0 but input is on cpu"});
  expect_error([&](Args& a) { a.weight = on_cuda(a.weight); }, {"weight is on cuda:0 but input is on cpu"});
  expect_error([&](Args& a) { a.mask = on_cuda(a.mask); }, {"mask is on cuda:0 but input is on cpu"});
  expect_error([&](Args& a) { a.bias = on_cuda(a.bias); }, {"bias is on cuda:0 but input is on cpu"});
}

TEST(DeformConvArgs, Params) {
  expect_error([](Args& a) { a.params.stride_h = 0; }, {"stride must be positive", "stride_h: 0 stride_w: 1"});
  expect_error([](Args& a) { a.params.pad_w = -1; }, {"padding must be non-negative", "pad_h: 1 pad_w: -1"});
  expect_error([](Args& a) { a.params.dilation_w = 0; }, {"dilation must be positive", "dilation_w: 0"});
  expect_error([](Args& a) { a.params.groups = 0; }, {"groups must be positive, found 0"});
  expect_error([](Args& a) { a.params.deformable_groups = -2; }, {"deformable_groups must be positive, found -2"});
  expect_error([](Args& a) { a.weight = Tensor::zeros({6, 2, 0, 3}); }, {"weight_h: 0 weight_w: 3"});
}

TEST(DeformConvArgs, Groups) {
  expect_error([](Args& a) { a.params.groups = 3; }, {"input.shape[1] (channels) = 4 is not divisible by groups = 3"});
  expect_error([](Args& a) { a.weight = Tensor::zeros({6, 4, 3, 3}); },
               {"weight.shape[1] is not valid: got: 4 expected: 2"});
  expect_error([](Args& a) { a.weight = Tensor::zeros({5, 2, 3, 3}); a.bias = Tensor::zeros({5}); },
               {"weight.shape[0] (out channels) = 5 is not divisible by groups = 2"});
  expect_error(
      [](Args& a) {
        a.params.groups = 1;
        a.weight = Tensor::zeros({6, 4, 3, 3});
        a.params.deformable_groups = 3;
      },
      {"input.shape[1] (channels) = 4 is not divisible by deformable_groups = 3"});
}

TEST(DeformConvArgs, OutputTooSmall) {
  expect_error(
      [](Args& a) {
        a.input = Tensor::zeros({2, 4, 1, 7});
        a.params.pad_h = 0;
      },
      {"Calculated output size too small - out_h: -1 out_w: 7"});
}

TEST(DeformConvArgs, OffsetShape) {
  expect_error([](Args& a) { a.offset = Tensor::zeros({1, 36, 8, 7}); },
               {"offset.shape[0] is not valid: got: 1 expected: 2"});
  expect_error([](Args& a) { a.offset = Tensor::zeros({2, 18, 8, 7}); },
               {"offset.shape[1] is not valid: got: 18 expected: 36", "deformable_groups 2", "kernel 3x3"});
  expect_error([](Args& a) { a.offset = Tensor::zeros({2, 36, 7, 7}); },
               {"offset output dims: got: (7, 7) expected: (8, 7)"});
  expect_error([](Args& a) { a.offset = Tensor::zeros({2, 36, 8, 8}); },
               {"offset output dims: got: (8, 8) expected: (8, 7)"});
}

TEST(DeformConvArgs, MaskShape) {
  expect_error([](Args& a) { a.mask = Tensor::zeros({3, 18, 8, 7}); },
               {"mask.shape[0] is not valid: got: 3 expected: 2"});
  expect_error([](Args& a) { a.mask = Tensor::zeros({2, 9, 8, 7}); },
               {"mask.shape[1] is not valid: got: 9 expected: 18"});
  expect_error([](Args& a) { a.mask = Tensor::zeros({2, 18, 8, 1}); },
               {"mask output dims: got: (8, 1) expected: (8, 7)"});
}

TEST(DeformConvArgs, BiasShape) {
  expect_error([](Args& a) { a.bias = Tensor::zeros({5}); }, {"bias.shape[0] is not valid: got: 5 expected: 6"});
}

// ---- internals ------------------------------------------------------------------------------

// With zero offsets and no mask, deformable_im2col is a plain zero-padded im2col with the
// documented layout; a mask scales the rows of its tap.
TEST(DeformableIm2col, ZeroOffsetsArePlainIm2col) {
  std::mt19937 rng(7);
  const int64_t c = 3, h = 6, w = 5, kh = 3, kw = 2;
  ops::DeformConv2dParams p;
  p.stride_h = 2;
  p.pad_h = 1;
  p.pad_w = 1;
  p.dilation_w = 2;
  p.deformable_groups = 3;
  const int64_t ho = ops::conv_output_size(h, kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t wo = ops::conv_output_size(w, kw, p.stride_w, p.pad_w, p.dilation_w);
  const Tensor input = random_tensor({c, h, w}, rng);
  const Tensor offset = Tensor::zeros({2 * 3 * kh * kw, ho, wo});
  const Tensor mask = random_tensor({3 * kh * kw, ho, wo}, rng);
  std::vector<float> cols(static_cast<std::size_t>(c * kh * kw * ho * wo), -7.0f);
  std::vector<float> cols_masked(cols.size(), -7.0f);
  detail::deformable_im2col(input.data_ptr<float>(), offset.data_ptr<float>(), nullptr, c, h, w, kh, kw, p, ho, wo,
                            cols.data());
  detail::deformable_im2col(input.data_ptr<float>(), offset.data_ptr<float>(), mask.data_ptr<float>(), c, h, w, kh,
                            kw, p, ho, wo, cols_masked.data());
  const float* in = input.data_ptr<float>();
  const float* m = mask.data_ptr<float>();
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        for (int64_t y = 0; y < ho; ++y)
          for (int64_t x = 0; x < wo; ++x) {
            const int64_t iy = y * p.stride_h - p.pad_h + i * p.dilation_h;
            const int64_t ix = x * p.stride_w - p.pad_w + j * p.dilation_w;
            const float expected = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? in[(ch * h + iy) * w + ix] : 0.0f;
            const int64_t at = (((ch * kh + i) * kw + j) * ho + y) * wo + x;
            ASSERT_EQ(cols[at], expected) << "c " << ch << " tap " << i << "," << j << " at " << y << "," << x;
            // deformable group of channel ch is ch (3 groups of 1 channel)
            const float mv = m[((ch * kh * kw) + i * kw + j) * ho * wo + y * wo + x];
            ASSERT_FLOAT_EQ(cols_masked[at], mv * expected);
          }
}

// sgemm against a double-precision triple loop, over sizes that cover every edge of its blocking
// (M % 4, N % 8, K and N beyond one block), sub-matrix leading dimensions and accumulation.
TEST(Sgemm, MatchesNaive) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t sizes[][3] = {{1, 1, 1},    {3, 7, 5},      {4, 8, 256},  {5, 9, 257},
                              {13, 300, 40}, {16, 513, 600}, {7, 1000, 3}, {64, 2000, 288}};
  for (const auto& s : sizes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    const int64_t lda = K + 3, ldb = N + 5, ldc = N + 1;
    std::vector<float> A(static_cast<std::size_t>(M * lda)), B(static_cast<std::size_t>(K * ldb)),
        C(static_cast<std::size_t>(M * ldc));
    for (auto& v : A) v = dist(rng);
    for (auto& v : B) v = dist(rng);
    for (bool accumulate : {false, true}) {
      for (auto& v : C) v = dist(rng);
      const std::vector<float> C0 = C;
      detail::sgemm(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, accumulate);
      double worst = 0;
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
          double ref = accumulate ? C0[i * ldc + j] : 0.0;
          double mag = std::abs(ref);
          for (int64_t k = 0; k < K; ++k) {
            ref += static_cast<double>(A[i * lda + k]) * B[k * ldb + j];
            mag += std::abs(static_cast<double>(A[i * lda + k]) * B[k * ldb + j]);
          }
          worst = std::max(worst, std::abs(C[i * ldc + j] - ref) / (mag + 1e-30));
        }
        // The padding between rows of C is never written.
        for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(C[i * ldc + j], C0[i * ldc + j]);
      }
      // The classical bound |error| <= gamma_K * sum |terms|, gamma_K ~ K * 2^-24 (plus the addition to C).
      EXPECT_LE(worst, static_cast<double>(K + 2) * std::ldexp(1.0, -24)) << "M " << M << " N " << N << " K " << K << " accumulate " << accumulate;
    }
  }
}

TEST(Sgemm, ZeroInnerSize) {
  std::vector<float> C = {1, 2, 3, 4, 5, 6};
  detail::sgemm(2, 3, 0, nullptr, 0, nullptr, 3, C.data(), 3, true);
  EXPECT_EQ(C, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  detail::sgemm(2, 3, 0, nullptr, 0, nullptr, 3, C.data(), 3, false);
  EXPECT_EQ(C, (std::vector<float>(6, 0.0f)));
}

}  // namespace
}  // namespace backbone
