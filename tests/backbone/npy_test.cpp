// SPDX-License-Identifier: Apache-2.0
// load_npy / save_npy: files written by numpy (tests/data/make_preprocess.py), round trips of every
// dtype, Fortran order, big-endian data, format versions, and errors (including truncation at every
// byte offset).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "backbone/error.h"
#include "backbone/npy.h"
#include "backbone/tensor.h"

namespace backbone {
namespace {

std::string data_path(const std::string& name) { return std::string(BACKBONE_TEST_DATA_DIR) + "/preprocess/" + name; }

std::string temp_path(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = tmp && *tmp ? tmp : "/tmp";
  return dir + "/backbone_npy_test_" + std::to_string(::getpid()) + "_" + name;
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// The generator's values: A(i) = (i * 37) % 101 - 50.
int64_t base_value(int64_t i) { return (i * 37) % 101 - 50; }

// Expected value of element i (C order) of npy_<code>.npy, as a double.
double expected_value(const std::string& code, int64_t i) {
  if (code == "f4" || code == "f8" || code == "f2") return static_cast<double>(base_value(i)) * 0.25;
  if (code == "i8") return static_cast<double>(base_value(i) * 1000000007LL);
  if (code == "i4") return static_cast<double>(base_value(i) * 1000003LL);
  if (code == "i2") return static_cast<double>(static_cast<int16_t>(base_value(i) * 601));
  if (code == "i1") return static_cast<double>(base_value(i));
  if (code == "u1") return static_cast<double>((i * 37) % 256);
  if (code == "b1") return i % 3 == 0 ? 1.0 : 0.0;
  return NAN;
}

double element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::Float32: return t.data_ptr<float>()[i];
    case DType::Float64: return t.data_ptr<double>()[i];
    case DType::Float16: return half_to_float(static_cast<const uint16_t*>(t.data())[i]);
    case DType::Int64: return static_cast<double>(t.data_ptr<int64_t>()[i]);
    case DType::Int32: return t.data_ptr<int32_t>()[i];
    case DType::Int16: return t.data_ptr<int16_t>()[i];
    case DType::Int8: return t.data_ptr<int8_t>()[i];
    case DType::UInt8: return t.data_ptr<uint8_t>()[i];
    case DType::Bool: return t.data_ptr<bool>()[i] ? 1.0 : 0.0;
    default: return NAN;
  }
}

DType dtype_of_code(const std::string& code) {
  if (code == "f4") return DType::Float32;
  if (code == "f8") return DType::Float64;
  if (code == "f2") return DType::Float16;
  if (code == "i8") return DType::Int64;
  if (code == "i4") return DType::Int32;
  if (code == "i2") return DType::Int16;
  if (code == "i1") return DType::Int8;
  if (code == "u1") return DType::UInt8;
  return DType::Bool;
}

const std::vector<std::string> kCodes = {"f4", "f8", "f2", "i8", "i4", "i2", "i1", "u1", "b1"};

void expect_generated(const Tensor& t, const std::string& code, const std::string& what) {
  ASSERT_TRUE(t.defined()) << what;
  EXPECT_EQ(t.dtype(), dtype_of_code(code)) << what;
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4})) << what;
  EXPECT_TRUE(t.device().is_cpu()) << what;
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(element(t, i), expected_value(code, i)) << what << " element " << i;
}

// Expects load_npy(path) to throw an Error whose message contains every piece of `parts`.
void expect_load_error(const std::string& path, const std::vector<std::string>& parts) {
  try {
    load_npy(path);
    ADD_FAILURE() << "load_npy(" << path << ") did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  }
}

TEST(NpyTest, ReadsNumpyFilesOfEveryDtype) {
  for (const auto& code : kCodes) expect_generated(load_npy(data_path("npy_" + code + ".npy")), code, code);
}

TEST(NpyTest, ReadsFortranOrderAsCOrder) {
  for (const auto& code : kCodes)
    expect_generated(load_npy(data_path("npy_" + code + "_fortran.npy")), code, code + " fortran");
  Tensor t = load_npy(data_path("npy_fortran_2x5_f4.npy"));
  ASSERT_EQ(t.shape(), (Shape{2, 5}));
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(t.data_ptr<float>()[i], base_value(i) * 0.25f) << i;
}

TEST(NpyTest, ReadsBigEndianByConverting) {
  for (const auto& code : kCodes) {
    if (code == "i1" || code == "u1" || code == "b1") continue;
    expect_generated(load_npy(data_path("npy_" + code + "_big.npy")), code, code + " big-endian");
  }
}

TEST(NpyTest, ReadsFormatVersions1To3) {
  for (int v = 1; v <= 3; ++v) {
    const std::string path = data_path("npy_f4_v" + std::to_string(v) + ".npy");
    auto bytes = read_bytes(path);
    ASSERT_GT(bytes.size(), 8u);
    EXPECT_EQ(bytes[6], v) << path;  // numpy really wrote that version
    expect_generated(load_npy(path), "f4", path);
  }
}

TEST(NpyTest, ReadsScalarEmptyAndVector) {
  Tensor s = load_npy(data_path("npy_scalar_f8.npy"));
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.data_ptr<double>()[0], -2.75);
  Tensor e = load_npy(data_path("npy_empty_f4.npy"));
  EXPECT_EQ(e.shape(), (Shape{0, 3}));
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.dtype(), DType::Float32);
  Tensor v = load_npy(data_path("npy_vector_i4.npy"));
  ASSERT_EQ(v.shape(), (Shape{5}));
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(v.data_ptr<int32_t>()[i], base_value(i) * 3);
}

TEST(NpyTest, RoundTripsEveryDtype) {
  for (const auto& code : kCodes) {
    Tensor a = load_npy(data_path("npy_" + code + ".npy"));
    const std::string path = temp_path("rt_" + code + ".npy");
    save_npy(path, a);
    Tensor b = load_npy(path);
    expect_generated(b, code, code + " round trip");
    // The written file is byte-identical to numpy's own (same header text and padding).
    EXPECT_EQ(read_bytes(path), read_bytes(data_path("npy_" + code + ".npy"))) << code;
    std::remove(path.c_str());
  }
}

TEST(NpyTest, RoundTripsScalarEmptyAndVectorByteIdenticalToNumpy) {
  for (const std::string name : {"npy_scalar_f8.npy", "npy_empty_f4.npy", "npy_vector_i4.npy"}) {
    Tensor a = load_npy(data_path(name));
    const std::string path = temp_path("rt_" + name);
    save_npy(path, a);
    EXPECT_EQ(read_bytes(path), read_bytes(data_path(name))) << name;
    Tensor b = load_npy(path);
    EXPECT_EQ(b.shape(), a.shape());
    EXPECT_EQ(b.dtype(), a.dtype());
    std::remove(path.c_str());
  }
}

TEST(NpyTest, SavesNonContiguousTensorsInCOrder) {
  // A [3, 4] float32 tensor viewed transposed as [4, 3] (strides {1, 4}).
  std::vector<float> storage(12);
  for (int i = 0; i < 12; ++i) storage[i] = static_cast<float>(i) + 0.5f;
  Tensor t = Tensor::from_blob(storage.data(), {4, 3}, DType::Float32, Device::cpu(), nullptr, {1, 4});
  ASSERT_FALSE(t.is_contiguous());
  const std::string path = temp_path("transposed.npy");
  save_npy(path, t);
  Tensor b = load_npy(path);
  ASSERT_EQ(b.shape(), (Shape{4, 3}));
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(b.data_ptr<float>()[r * 3 + c], storage[c * 4 + r]) << r << "," << c;
  std::remove(path.c_str());
}

TEST(NpyTest, SaveRejectsBFloat16AndUndefined) {
  Tensor t = Tensor::zeros({2}, DType::BFloat16);
  const std::string path = temp_path("bf16.npy");
  try {
    save_npy(path, t);
    ADD_FAILURE() << "no error for bfloat16";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bfloat16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(save_npy(path, Tensor()), Error);
  EXPECT_THROW(save_npy("/nonexistent-dir/x.npy", Tensor::zeros({2})), Error);
  std::remove(path.c_str());
}

TEST(NpyTest, RejectsUnsupportedDtypes) {
  expect_load_error(data_path("npy_u2.npy"), {"unsupported dtype", "<u2"});
  expect_load_error(data_path("npy_c8.npy"), {"unsupported dtype", "<c8"});
  expect_load_error(data_path("npy_structured.npy"), {"descr"});
}

TEST(NpyTest, ErrorsNameTheFileAndTheProblem) {
  expect_load_error(temp_path("does_not_exist.npy"), {"cannot open"});
  const std::string path = temp_path("bad.npy");
  write_text(path, "");
  expect_load_error(path, {"empty"});
  write_text(path, "PK\x03\x04 this is a zip file");
  expect_load_error(path, {"magic"});
  auto good = read_bytes(data_path("npy_f4.npy"));
  auto bytes = good;
  bytes[6] = 4;
  write_bytes(path, bytes);
  expect_load_error(path, {"version 4.0"});
  auto with_header = [&](const std::string& header) {
    std::vector<unsigned char> b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    b.push_back(static_cast<unsigned char>(header.size() & 0xff));
    b.push_back(static_cast<unsigned char>(header.size() >> 8));
    b.insert(b.end(), header.begin(), header.end());
    for (int i = 0; i < 16; ++i) b.push_back(0);
    write_bytes(path, b);
  };
  with_header("{'descr': '<f4', 'shape': (2,), }\n");
  expect_load_error(path, {"'fortran_order'"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}\n");
  expect_load_error(path, {"unexpected key 'extra'"});
  with_header("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }\n");
  expect_load_error(path, {"malformed header"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': 2, }\n");
  expect_load_error(path, {"'shape' is not a tuple of integers"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }\n");
  expect_load_error(path, {"'shape' is not a tuple of integers"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }\n");  // 16 bytes < 20
  expect_load_error(path, {"truncated", "20 bytes", "16 bytes"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }\n");
  expect_load_error(path, {"too many elements"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }\n");
  expect_load_error(path, {"truncated"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n");
  expect_load_error(path, {"too large"});
  with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), ");
  expect_load_error(path, {"malformed header"});
  // Python 2 era headers ("2L") and double quotes still load.
  with_header("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2L, 2L)}");
  Tensor t = load_npy(path);
  EXPECT_EQ(t.shape(), (Shape{2, 2}));
  std::remove(path.c_str());
}

TEST(NpyTest, TruncationAtEveryByteOffsetThrows) {
  for (const std::string name : {"npy_f4.npy", "npy_f8_fortran.npy", "npy_f4_v2.npy", "npy_scalar_f8.npy"}) {
    const auto full = read_bytes(data_path(name));
    ASSERT_GT(full.size(), 64u) << name;
    const std::string path = temp_path("trunc_" + name);
    for (std::size_t n = 0; n < full.size(); ++n) {
      write_bytes(path, std::vector<unsigned char>(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
      try {
        load_npy(path);
        ADD_FAILURE() << name << " truncated to " << n << " of " << full.size() << " bytes loaded without error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      }
    }
    write_bytes(path, full);
    EXPECT_NO_THROW(load_npy(path)) << name;
    std::remove(path.c_str());
  }
}

}  // namespace
}  // namespace backbone
