// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "backbone/error.h"
#include "backbone/tensor.h"

using namespace backbone;

TEST(Tensor, EmptyIsContiguousAndOwned) {
  Tensor t = Tensor::empty({2, 3, 4});
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_THROW(t.size(3), ShapeError);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  EXPECT_TRUE(t.storage() != nullptr);
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, SharedOwnershipOutlivesTheFirstHandle) {
  Tensor view;
  {
    Tensor t = Tensor::zeros({4});
    t.data_ptr<float>()[2] = 5.f;
    view = t.reshape({2, 2});
  }
  EXPECT_EQ(view.data_ptr<float>()[2], 5.f);
  EXPECT_EQ(view.shape(), (Shape{2, 2}));
}

TEST(Tensor, FromBlobKeepsOwnerAlive) {
  auto buffer = std::make_shared<std::vector<float>>(6, 1.5f);
  Tensor t = Tensor::from_blob(buffer->data(), {2, 3}, DType::Float32, Device::cpu(), buffer);
  std::weak_ptr<std::vector<float>> weak = buffer;
  buffer.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_NE(t.data(), nullptr);
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(Tensor, StridedViewsBecomeContiguous) {
  std::vector<float> data = {0, 1, 2, 3, 4, 5};  // 2x3, viewed transposed as 3x2
  Tensor t = Tensor::from_blob(data.data(), {3, 2}, DType::Float32, Device::cpu(), nullptr, {1, 3});
  EXPECT_FALSE(t.is_contiguous());
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  const float expected[] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.data_ptr<float>()[i], expected[i]);
  EXPECT_THROW(t.reshape({6}), ShapeError);
}

TEST(Tensor, DtypeCheckedAccess) {
  Tensor t = Tensor::zeros({3}, DType::Float16);
  EXPECT_THROW(t.data_ptr<float>(), ShapeError);
  try {
    t.data_ptr<float>();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("expected float32, found float16"), std::string::npos);
  }
}

TEST(Tensor, ReshapeInfersOneSize) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.reshape({-1, 4}).shape(), (Shape{6, 4}));
  EXPECT_THROW(t.reshape({5, -1}), ShapeError);
  EXPECT_THROW(t.reshape({-1, -1}), ShapeError);
}

TEST(Tensor, DtypeConversionsRoundTrip) {
  Tensor t = Tensor::empty({5});
  const float v[] = {0.f, -1.5f, 3.14159f, 65504.f, 1e-6f};
  std::memcpy(t.data(), v, sizeof v);
  Tensor h = t.to(DType::Float16).to(DType::Float32);
  Tensor b = t.to(DType::BFloat16).to(DType::Float32);
  Tensor d = t.to(DType::Float64);
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(h.data_ptr<float>()[i], v[i], std::abs(v[i]) * 1e-3 + 1e-7) << i;
    EXPECT_NEAR(b.data_ptr<float>()[i], v[i], std::abs(v[i]) * 8e-3) << i;
    EXPECT_DOUBLE_EQ(d.data_ptr<double>()[i], static_cast<double>(v[i]));
  }
  Tensor i64 = t.to(DType::Int64);
  EXPECT_EQ(i64.data_ptr<int64_t>()[2], 3);
}

TEST(Tensor, HalfConversionMatchesIeee) {
  // Reference bit patterns of IEEE 754 binary16 (round to nearest even).
  EXPECT_EQ(float_to_half(1.f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.f), 0xc000);
  EXPECT_EQ(float_to_half(65504.f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.f), 0x7c00);  // rounds to infinity
  EXPECT_EQ(float_to_half(std::ldexp(1.f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(float_to_half(1.f + std::ldexp(1.f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(float_to_half(1.f + 3 * std::ldexp(1.f, -11)), 0x3c02);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h < 0x7c00; ++h) EXPECT_EQ(float_to_half(half_to_float(static_cast<uint16_t>(h))), h);
  EXPECT_EQ(float_to_bfloat16(1.f), 0x3f80);
  EXPECT_EQ(bfloat16_to_float(0x4049), 3.140625f);
}

TEST(Tensor, CopyIntoStridedDestination) {
  std::vector<float> dst(6, 0.f);
  Tensor d = Tensor::from_blob(dst.data(), {3, 2}, DType::Float32, Device::cpu(), nullptr, {1, 3});
  Tensor s = Tensor::empty({3, 2});
  for (int i = 0; i < 6; ++i) s.data_ptr<float>()[i] = static_cast<float>(i);
  d.copy_(s);
  const float expected[] = {0, 2, 4, 1, 3, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(dst[i], expected[i]);
  EXPECT_THROW(d.copy_(Tensor::empty({2, 3})), ShapeError);
}

TEST(Device, ParsesNames) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"}) EXPECT_THROW(Device::parse(bad), Error) << bad;
}

TEST(DType, NamesRoundTrip) {
  for (DType d : {DType::Float32, DType::Float16, DType::BFloat16, DType::Float64, DType::Int64, DType::Int32,
                  DType::Int16, DType::Int8, DType::UInt8, DType::Bool})
    EXPECT_EQ(dtype_from_name(dtype_name(d)), d);
  EXPECT_THROW(dtype_from_name("float8"), Error);
}

TEST(Tensor, CudaTensorsNeedTheCudaModule) {
  if (cuda_is_available()) GTEST_SKIP() << "a CUDA device is present; this checks the no-GPU path";
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_THROW(Tensor::empty({4}, DType::Float32, Device::cuda(0)), DeviceError);
}
