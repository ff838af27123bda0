// SPDX-License-Identifier: Apache-2.0
// The dtype conversions of the meta library (float32 <-> float16 / bfloat16): every 16-bit pattern
// round-trips, NaN and infinities keep their kind and sign, and float32 -> 16 bits rounds to the
// nearest value, ties to even, checked against a reference that decodes every 16-bit value with
// ldexp and picks the nearest by search (no bit tricks shared with the library).
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

float from_bits(uint32_t x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
uint32_t bits_of(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
}

// A 16-bit float format: exponent and mantissa widths (float16 5/10, bfloat16 8/7).
struct Format16 {
  const char* name;
  int exp_bits, mant_bits;
  uint16_t (*to16)(gfloat);
  gfloat (*from16)(guint16);
  GstFeatureDType dtype;

  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  uint16_t inf_bits() const { return static_cast<uint16_t>(((1u << exp_bits) - 1) << mant_bits); }
  bool is_nan(uint16_t b) const { return (b & 0x7fffu) > inf_bits(); }
  // The value of a finite non-negative pattern, or for inf_bits() the value one unit above the
  // largest finite one (2^(emax+1)): where rounding starts to give infinity.
  double decode(uint16_t b) const {
    const int e = (b >> mant_bits) & ((1 << exp_bits) - 1);
    const int m = b & ((1 << mant_bits) - 1);
    if (e == 0) return std::ldexp(static_cast<double>(m), 1 - bias() - mant_bits);
    return std::ldexp(static_cast<double>(m + (1 << mant_bits)), e - bias() - mant_bits);
  }
  // Reference rounding of a finite |v| (a double, exact for any float): the nearest of the
  // increasing positive patterns 0 .. inf_bits(), ties to the even pattern.
  uint16_t reference_abs(double a) const {
    uint16_t lo = 0, hi = inf_bits();
    if (a >= decode(hi)) return hi;
    while (hi - lo > 1) {  // decode(lo) <= a < decode(hi)
      const uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
      (decode(mid) <= a ? lo : hi) = mid;
    }
    const double dl = a - decode(lo), dh = decode(hi) - a;
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1u) ? hi : lo;
  }
  uint16_t reference(float f) const {
    const uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
    return static_cast<uint16_t>(sign | reference_abs(std::fabs(static_cast<double>(f))));
  }
};

const Format16 kHalf = {"float16", 5, 10, gst_feature_dtype_float32_to_float16, gst_feature_dtype_float16_to_float32,
                        GST_FEATURE_DTYPE_FLOAT16};
const Format16 kBFloat = {"bfloat16", 8, 7, gst_feature_dtype_float32_to_bfloat16,
                          gst_feature_dtype_bfloat16_to_float32, GST_FEATURE_DTYPE_BFLOAT16};

// The checks compare decoded values as floats and doubles. bfloat16's subnormals are float32
// subnormals, which a thread with the SSE control bits FTZ/DAZ set reads as zero; libraries loaded
// into this process by the pipeline tests (GStreamer plugins and their codecs) may leave them set on
// the main thread. The conversions themselves are integer code: the checks run in IEEE mode.
class DTypeConversion : public ::testing::TestWithParam<const Format16*> {
 protected:
  void SetUp() override {
#if defined(__SSE__) || defined(__x86_64__)
    _mm_setcsr(_mm_getcsr() & ~(0x8000u | 0x0040u));  // FTZ off, DAZ off
#endif
  }
};

TEST_P(DTypeConversion, EveryPatternRoundTrips) {
  const Format16& f = *GetParam();
  for (uint32_t b = 0; b <= 0xffffu; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    const float v = f.from16(bits);
    if (f.is_nan(bits)) {
      ASSERT_TRUE(std::isnan(v)) << std::hex << b;
      ASSERT_EQ(std::signbit(v), (b & 0x8000u) != 0) << std::hex << b;
      const uint16_t back = f.to16(v);
      ASSERT_TRUE(f.is_nan(back)) << std::hex << b << " -> " << back;
      ASSERT_EQ(back & 0x8000u, b & 0x8000u) << std::hex << b;
      continue;
    }
    // exact: the decoded value is the reference's
    const double expect = (b & 0x8000u ? -1 : 1) * ((b & 0x7fffu) == f.inf_bits() ? HUGE_VAL : f.decode(bits & 0x7fffu));
    ASSERT_EQ(static_cast<double>(v), expect) << std::hex << b;
    ASSERT_EQ(std::signbit(v), (b & 0x8000u) != 0) << std::hex << b;
    ASSERT_EQ(f.to16(v), bits) << std::hex << b;
  }
}

TEST_P(DTypeConversion, RoundsToNearestEven) {
  const Format16& f = *GetParam();
  std::vector<float> values;
  // around every positive pattern: the midpoints to the next one (ties), and one float step on
  // each side of them and of the pattern itself
  for (uint16_t b = 0; b < f.inf_bits(); ++b) {
    const double lo = f.decode(b), hi = f.decode(static_cast<uint16_t>(b + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2) << "midpoints are exact in float";
    for (float v : {static_cast<float>(lo), mid}) {
      values.push_back(v);
      values.push_back(std::nextafter(v, 0.0f));
      values.push_back(std::nextafter(v, std::numeric_limits<float>::infinity()));
    }
  }
  // random float32 patterns over the whole range (finite ones)
  std::mt19937 rng(12);
  for (int i = 0; i < 200000; ++i) {
    const float v = from_bits(static_cast<uint32_t>(rng()) & 0x7fffffffu);
    if (std::isfinite(v)) values.push_back(v);
  }
  values.push_back(std::numeric_limits<float>::max());
  values.push_back(std::numeric_limits<float>::denorm_min());
  values.push_back(std::numeric_limits<float>::min());
  std::size_t checked = 0;
  for (float a : values)
    for (float v : {a, -a}) {
      ASSERT_EQ(f.to16(v), f.reference(v)) << f.name << " of " << v << " (0x" << std::hex << bits_of(v) << ")";
      ++checked;
    }
  EXPECT_GT(checked, 400000u);
}

TEST_P(DTypeConversion, NanInfinityAndZeroKeepKindAndSign) {
  const Format16& f = *GetParam();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f.to16(inf), f.inf_bits());
  EXPECT_EQ(f.to16(-inf), 0x8000u | f.inf_bits());
  EXPECT_EQ(f.to16(0.0f), 0u);
  EXPECT_EQ(f.to16(-0.0f), 0x8000u);
  EXPECT_EQ(f.from16(f.inf_bits()), inf);
  EXPECT_EQ(f.from16(static_cast<uint16_t>(0x8000u | f.inf_bits())), -inf);
  // quiet and signalling NaNs of float32, both signs, several payloads
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fbfffffu, 0x7fe12345u, 0x7f800100u})
    for (uint32_t sign : {0u, 0x80000000u}) {
      const uint16_t h = f.to16(from_bits(nan | sign));
      EXPECT_TRUE(f.is_nan(h)) << std::hex << (nan | sign) << " -> " << h << ": a NaN must not become infinity";
      EXPECT_EQ(h & 0x8000u, sign >> 16) << std::hex << (nan | sign);
    }
  // just past the largest finite value rounds to infinity (the largest finite is odd: the tie
  // goes up), just before it stays finite
  const double max_finite = f.decode(static_cast<uint16_t>(f.inf_bits() - 1));
  const double overflow = (max_finite + f.decode(f.inf_bits())) / 2;
  EXPECT_EQ(f.to16(static_cast<float>(overflow)), f.inf_bits());
  EXPECT_EQ(f.to16(std::nextafter(static_cast<float>(overflow), 0.0f)), f.inf_bits() - 1);
}

TEST_P(DTypeConversion, BulkConvertMatchesTheScalarFunctions) {
  const Format16& f = *GetParam();
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 100.0f);
  std::vector<float> in(1001);
  for (float& v : in) v = dist(rng);
  in[3] = std::numeric_limits<float>::quiet_NaN();
  in[4] = -std::numeric_limits<float>::infinity();
  // float32 -> 16 bits, unaligned destination
  std::vector<guint8> out16(in.size() * 2 + 1);
  ASSERT_TRUE(gst_feature_dtype_convert(GST_FEATURE_DTYPE_FLOAT32, reinterpret_cast<const guint8*>(in.data()),
                                        in.size() * 4, f.dtype, out16.data() + 1, out16.size() - 1));
  std::vector<uint16_t> bits(in.size());
  std::memcpy(bits.data(), out16.data() + 1, bits.size() * 2);
  for (std::size_t i = 0; i < in.size(); ++i) ASSERT_EQ(bits[i], f.to16(in[i])) << i;
  // 16 bits -> float32, unaligned source
  std::vector<float> back(in.size());
  ASSERT_TRUE(gst_feature_dtype_convert(f.dtype, out16.data() + 1, bits.size() * 2, GST_FEATURE_DTYPE_FLOAT32,
                                        reinterpret_cast<guint8*>(back.data()), back.size() * 4));
  for (std::size_t i = 0; i < in.size(); ++i) {
    const float expect = f.from16(bits[i]);
    if (std::isnan(expect))
      ASSERT_TRUE(std::isnan(back[i])) << i;
    else
      ASSERT_EQ(back[i], expect) << i;
  }
  // same dtype: a copy
  std::vector<uint16_t> copy(bits.size());
  ASSERT_TRUE(gst_feature_dtype_convert(f.dtype, out16.data() + 1, bits.size() * 2, f.dtype,
                                        reinterpret_cast<guint8*>(copy.data()), copy.size() * 2));
  EXPECT_EQ(copy, bits);
}

INSTANTIATE_TEST_SUITE_P(Formats, DTypeConversion, ::testing::Values(&kHalf, &kBFloat),
                         [](const ::testing::TestParamInfo<const Format16*>& p) { return std::string(p.param->name); });

TEST(DTypeConvert, HalfToBFloat16RoundsOnce) {
  // every float16 -> bfloat16 equals float32 -> bfloat16 of its exact value, and back
  std::vector<uint16_t> halves(0x10000), bf(0x10000), again(0x10000);
  for (uint32_t b = 0; b <= 0xffffu; ++b) halves[b] = static_cast<uint16_t>(b);
  ASSERT_TRUE(gst_feature_dtype_convert(GST_FEATURE_DTYPE_FLOAT16, reinterpret_cast<const guint8*>(halves.data()),
                                        halves.size() * 2, GST_FEATURE_DTYPE_BFLOAT16,
                                        reinterpret_cast<guint8*>(bf.data()), bf.size() * 2));
  ASSERT_TRUE(gst_feature_dtype_convert(GST_FEATURE_DTYPE_BFLOAT16, reinterpret_cast<const guint8*>(bf.data()),
                                        bf.size() * 2, GST_FEATURE_DTYPE_FLOAT16,
                                        reinterpret_cast<guint8*>(again.data()), again.size() * 2));
  for (uint32_t b = 0; b <= 0xffffu; ++b) {
    const float v = gst_feature_dtype_float16_to_float32(static_cast<uint16_t>(b));
    ASSERT_EQ(bf[b], gst_feature_dtype_float32_to_bfloat16(v)) << std::hex << b;
    ASSERT_EQ(again[b], gst_feature_dtype_float32_to_float16(gst_feature_dtype_bfloat16_to_float32(bf[b])))
        << std::hex << b;
  }
}

// Invalid arguments: a critical naming what was expected and found, FALSE, nothing written.
class DTypeConvertInvalid : public ::testing::Test {
 protected:
  void SetUp() override {
    id_ = g_log_set_handler("GstFeatureMeta",
                            static_cast<GLogLevelFlags>(G_LOG_LEVEL_CRITICAL | G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION),
                            &DTypeConvertInvalid::on_log, this);
  }
  void TearDown() override { g_log_remove_handler("GstFeatureMeta", id_); }
  static void on_log(const gchar*, GLogLevelFlags, const gchar* message, gpointer self) {
    static_cast<DTypeConvertInvalid*>(self)->messages_.push_back(message);
  }
  std::string take_one() {
    EXPECT_EQ(messages_.size(), 1u);
    std::string m = messages_.empty() ? "" : messages_.front();
    messages_.clear();
    return m;
  }
  guint id_ = 0;
  std::vector<std::string> messages_;
};

TEST_F(DTypeConvertInvalid, RefusedWithACritical) {
  const guint8 src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  guint8 dest[8] = {};
  EXPECT_FALSE(gst_feature_dtype_convert(static_cast<GstFeatureDType>(12), src, 8, GST_FEATURE_DTYPE_FLOAT32, dest, 8));
  EXPECT_NE(take_one().find("unknown dtype 12"), std::string::npos);
  EXPECT_FALSE(gst_feature_dtype_convert(GST_FEATURE_DTYPE_FLOAT32, src, 6, GST_FEATURE_DTYPE_FLOAT16, dest, 8));
  EXPECT_NE(take_one().find("multiple of the float32 element size 4, found 6"), std::string::npos);
  EXPECT_FALSE(gst_feature_dtype_convert(GST_FEATURE_DTYPE_FLOAT16, src, 8, GST_FEATURE_DTYPE_FLOAT32, dest, 8));
  EXPECT_NE(take_one().find("4 elements of float32 need 16 bytes of dest, found 8"), std::string::npos);
  for (guint8 d : dest) EXPECT_EQ(d, 0);
  EXPECT_TRUE(gst_feature_dtype_convert(GST_FEATURE_DTYPE_FLOAT16, src, 0, GST_FEATURE_DTYPE_FLOAT32, nullptr, 0));
  EXPECT_TRUE(messages_.empty());
}

}  // namespace
