// SPDX-License-Identifier: Apache-2.0
// numpy .npy reader and writer (format versions 1.0, 2.0 and 3.0 as numpy.lib.format documents
// them). The whole file is read into memory first, so a truncated or corrupt file is reported as
// an Error and never read past its end.
#include "backbone/npy.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "backbone/error.h"

namespace backbone {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;

bool host_is_little_endian() {
  const uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error("load_npy: '" + path + "': " + what);
}

std::string quote_header(const std::string& header) {
  std::string out;
  for (char c : header) {
    if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// A tiny parser for the Python dict literal of an .npy header:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
struct HeaderValue {
  enum class Kind { String, Bool, Tuple, Other } kind = Kind::Other;
  std::string text;
  bool flag = false;
  std::vector<int64_t> ints;
};

class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), s_(text) {}

  void parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') {
        ++i_;
        break;
      }
      std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      HeaderValue value = parse_value();
      if (key == "descr") {
        if (value.kind != HeaderValue::Kind::String)
          fail(path_, "'descr' is not a simple dtype string (structured or sub-array dtypes are not supported)"
                      " in header " + quote());
        descr = value.text;
        have_descr = true;
      } else if (key == "fortran_order") {
        if (value.kind != HeaderValue::Kind::Bool)
          fail(path_, "'fortran_order' is not True or False in header " + quote());
        fortran = value.flag;
        have_fortran = true;
      } else if (key == "shape") {
        if (value.kind != HeaderValue::Kind::Tuple)
          fail(path_, "'shape' is not a tuple of integers in header " + quote());
        shape = value.ints;
        have_shape = true;
      } else {
        fail(path_, "header has an unexpected key '" + key + "' (expected exactly 'descr', 'fortran_order', "
                    "'shape'): " + quote());
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip_ws();
      expect('}');
      break;
    }
    skip_ws();
    if (i_ != s_.size()) fail(path_, "unexpected text after the header dict: " + quote());
    if (!have_descr || !have_fortran || !have_shape) {
      std::string missing;
      if (!have_descr) missing += " 'descr'";
      if (!have_fortran) missing += " 'fortran_order'";
      if (!have_shape) missing += " 'shape'";
      fail(path_, "header lacks the key(s)" + missing + ": " + quote());
    }
  }

 private:
  std::string quote() const { return "\"" + quote_header(s_) + "\""; }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) {
      std::string found = i_ < s_.size() ? std::string("'") + s_[i_] + "'" : std::string("the end");
      fail(path_, std::string("malformed header: expected '") + c + "' at offset " + std::to_string(i_) +
                      ", found " + found + " in " + quote());
    }
    ++i_;
  }
  std::string parse_string() {
    char q = peek();
    if (q != '\'' && q != '"')
      fail(path_, "malformed header: expected a quoted string at offset " + std::to_string(i_) + " in " + quote());
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != q) out += s_[i_++];
    if (i_ >= s_.size()) fail(path_, "malformed header: unterminated string in " + quote());
    ++i_;
    return out;
  }
  int64_t parse_int() {
    std::size_t start = i_;
    int64_t v = 0;
    if (!(peek() >= '0' && peek() <= '9'))
      fail(path_, "malformed header: expected a non-negative integer at offset " + std::to_string(i_) + " in " +
                      quote());
    while (peek() >= '0' && peek() <= '9') {
      int d = peek() - '0';
      if (v > (std::numeric_limits<int64_t>::max() - d) / 10)
        fail(path_, "shape dimension '" + s_.substr(start, i_ - start + 1) + "...' is too large in " + quote());
      v = v * 10 + d;
      ++i_;
    }
    if (peek() == 'L' || peek() == 'l') ++i_;  // Python 2 long literals in old files
    return v;
  }
  HeaderValue parse_value() {
    HeaderValue v;
    char c = peek();
    if (c == '\'' || c == '"') {
      v.kind = HeaderValue::Kind::String;
      v.text = parse_string();
    } else if (s_.compare(i_, 4, "True") == 0) {
      v.kind = HeaderValue::Kind::Bool;
      v.flag = true;
      i_ += 4;
    } else if (s_.compare(i_, 5, "False") == 0) {
      v.kind = HeaderValue::Kind::Bool;
      v.flag = false;
      i_ += 5;
    } else if (c == '(' || c == '[') {
      char close = c == '(' ? ')' : ']';
      ++i_;
      skip_ws();
      bool is_ints = true;
      while (peek() != close) {
        skip_ws();
        if (peek() >= '0' && peek() <= '9') {
          v.ints.push_back(parse_int());
        } else {
          // A nested value (a structured dtype list): skip it as a whole.
          is_ints = false;
          skip_nested();
        }
        skip_ws();
        if (peek() == ',') {
          ++i_;
          skip_ws();
        } else if (peek() != close) {
          fail(path_, "malformed header: expected ',' or '" + std::string(1, close) + "' at offset " +
                          std::to_string(i_) + " in " + quote());
        }
      }
      ++i_;
      v.kind = (c == '(' && is_ints) ? HeaderValue::Kind::Tuple : HeaderValue::Kind::Other;
    } else if ((c >= '0' && c <= '9') || c == '-') {
      ++i_;  // a number: only 'shape' takes numbers, inside a tuple
      while ((peek() >= '0' && peek() <= '9') || peek() == '.') ++i_;
    } else {
      fail(path_, "malformed header: unexpected value at offset " + std::to_string(i_) + " in " + quote());
    }
    return v;
  }
  void skip_nested() {
    int depth = 0;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (c == '\'' || c == '"') {
        parse_string();
        continue;
      }
      if (c == '(' || c == '[' || c == '{') ++depth;
      if (c == ')' || c == ']' || c == '}') {
        if (depth == 0) return;
        --depth;
      }
      if (c == ',' && depth == 0) return;
      ++i_;
    }
    fail(path_, "malformed header: unbalanced brackets in " + quote());
  }

  const std::string& path_;
  const std::string& s_;
  std::size_t i_ = 0;
};

// '<f4' -> Float32 etc. Sets `swap` when the data must be byte-swapped on this host.
DType parse_descr(const std::string& path, const std::string& descr, bool& swap) {
  if (descr.size() < 2) fail(path, "unsupported dtype descr '" + descr + "'");
  char order = descr[0];
  std::string code = descr.substr(1);
  if (order != '<' && order != '>' && order != '|' && order != '=')
    fail(path, "unsupported dtype descr '" + descr + "' (expected a byte order '<', '>', '|' or '=' first)");
  struct Entry {
    const char* code;
    DType dtype;
  };
  static const Entry kTable[] = {{"f4", DType::Float32}, {"f8", DType::Float64}, {"f2", DType::Float16},
                                 {"i8", DType::Int64},   {"i4", DType::Int32},   {"i2", DType::Int16},
                                 {"i1", DType::Int8},    {"u1", DType::UInt8},   {"b1", DType::Bool}};
  for (const Entry& e : kTable) {
    if (code == e.code) {
      bool big = order == '>' || (order == '=' && !host_is_little_endian());
      bool one_byte = dtype_size(e.dtype) == 1;
      swap = !one_byte && (big == host_is_little_endian());
      return e.dtype;
    }
  }
  fail(path, "unsupported dtype '" + descr +
                 "' (supported: float16/32/64 'f2' 'f4' 'f8', int8/16/32/64 'i1' 'i2' 'i4' 'i8', uint8 'u1', "
                 "bool 'b1', in either byte order)");
}

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "<f4";
    case DType::Float64: return "<f8";
    case DType::Float16: return "<f2";
    case DType::Int64: return "<i8";
    case DType::Int32: return "<i4";
    case DType::Int16: return "<i2";
    case DType::Int8: return "|i1";
    case DType::UInt8: return "|u1";
    case DType::Bool: return "|b1";
    case DType::BFloat16: return nullptr;
  }
  return nullptr;
}

void byteswap_inplace(unsigned char* data, std::size_t count, std::size_t elem) {
  for (std::size_t i = 0; i < count; ++i) {
    unsigned char* p = data + i * elem;
    for (std::size_t a = 0, b = elem - 1; a < b; ++a, --b) std::swap(p[a], p[b]);
  }
}

// Copies a strided (element strides) array of `elem`-byte items into contiguous C order.
void gather_c_order(const unsigned char* src, const Shape& shape, const Shape& strides, std::size_t elem,
                    unsigned char* dst) {
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const std::size_t nd = shape.size();
  if (nd == 0) {
    std::memcpy(dst, src, elem);
    return;
  }
  std::vector<int64_t> idx(nd, 0);
  const int64_t inner = shape[nd - 1];
  const int64_t inner_stride = strides[nd - 1];
  int64_t offset = 0;  // element offset of idx in src
  for (int64_t done = 0; done < n; done += inner) {
    if (inner_stride == 1) {
      std::memcpy(dst, src + offset * static_cast<int64_t>(elem), static_cast<std::size_t>(inner) * elem);
      dst += static_cast<std::size_t>(inner) * elem;
    } else {
      for (int64_t i = 0; i < inner; ++i) {
        std::memcpy(dst, src + (offset + i * inner_stride) * static_cast<int64_t>(elem), elem);
        dst += elem;
      }
    }
    // advance the outer dimensions (odometer)
    for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
      ++idx[d];
      offset += strides[d];
      if (idx[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

uint32_t read_le(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

Tensor load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open the file: ") + std::strerror(errno));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "read error");
  const std::size_t size = bytes.size();
  if (size == 0) fail(path, "the file is empty (expected a .npy file starting with \"\\x93NUMPY\")");

  if (size < kMagicLen + 2 || std::memcmp(bytes.data(), kMagic, std::min(size, kMagicLen)) != 0) {
    if (size >= kMagicLen && std::memcmp(bytes.data(), kMagic, kMagicLen) == 0)
      fail(path, "truncated: the file has " + std::to_string(size) + " bytes, too few for the format version");
    if (size < kMagicLen && std::memcmp(bytes.data(), kMagic, size) == 0)
      fail(path, "truncated: the file has " + std::to_string(size) + " bytes, too few for the magic string "
                 "\"\\x93NUMPY\"");
    fail(path, "not a .npy file: it does not start with the magic string \"\\x93NUMPY\"");
  }
  const int major = bytes[6], minor = bytes[7];
  int len_bytes = 0;
  if (major == 1 && minor == 0) {
    len_bytes = 2;
  } else if ((major == 2 || major == 3) && minor == 0) {
    len_bytes = 4;
  } else {
    fail(path, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " (supported: 1.0, 2.0, 3.0)");
  }
  const std::size_t prefix = kMagicLen + 2 + static_cast<std::size_t>(len_bytes);
  if (size < prefix)
    fail(path, "truncated: the file has " + std::to_string(size) + " bytes, too few for the header length of format " +
                   std::to_string(major) + ".0");
  const std::size_t header_len = read_le(bytes.data() + 8, len_bytes);
  if (size - prefix < header_len)
    fail(path, "truncated: the header is " + std::to_string(header_len) + " bytes but only " +
                   std::to_string(size - prefix) + " bytes follow the header length");
  const std::string header(reinterpret_cast<const char*>(bytes.data() + prefix), header_len);

  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser(path, header).parse(descr, fortran, shape);
  // numpy's NPY_MAXDIMS (64 since numpy 2, 32 before).
  if (shape.size() > 64)
    fail(path, "shape has " + std::to_string(shape.size()) + " dimensions, at most 64 are supported");
  bool swap = false;
  const DType dtype = parse_descr(path, descr, swap);
  const std::size_t elem = dtype_size(dtype);

  const std::size_t data_offset = prefix + header_len;
  const std::size_t available = size - data_offset;
  // numel with overflow checks: it must fit in what the file holds.
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
      fail(path, "shape " + shape_str(shape) + " has too many elements");
    numel *= static_cast<uint64_t>(d);
  }
  if (numel > available / elem || numel * elem > available)
    fail(path, "truncated: shape " + shape_str(shape) + " of " + dtype_name(dtype) + " needs " +
                   (numel > std::numeric_limits<uint64_t>::max() / elem ? std::string("at least 2^64")
                                                                        : std::to_string(numel * elem)) +
                   " bytes of data but " + std::to_string(available) + " bytes follow the header");

  unsigned char* src = bytes.data() + data_offset;
  const std::size_t nbytes = static_cast<std::size_t>(numel) * elem;
  if (swap) byteswap_inplace(src, static_cast<std::size_t>(numel), elem);
  if (dtype == DType::Bool) {
    for (std::size_t i = 0; i < nbytes; ++i) src[i] = src[i] != 0 ? 1 : 0;
  }

  Tensor out;
  try {
    out = Tensor::empty(shape, dtype);
  } catch (const ShapeError& e) {  // an empty array whose other sizes multiply past int64
    fail(path, e.what());
  }
  if (nbytes == 0) return out;
  auto* dst = static_cast<unsigned char*>(out.data());
  if (!fortran || shape.size() < 2) {
    std::memcpy(dst, src, nbytes);
  } else {
    // Column-major data: element (i0, ..., in-1) is at sum(i_k * prod(shape[0..k-1])).
    Shape fstrides(shape.size());
    int64_t s = 1;
    for (std::size_t k = 0; k < shape.size(); ++k) {
      fstrides[k] = s;
      s *= shape[k];
    }
    gather_c_order(src, shape, fstrides, elem, dst);
  }
  return out;
}

void save_npy(const std::string& path, const Tensor& tensor) {
  const std::string where = "save_npy: '" + path + "': ";
  if (!tensor.defined()) throw Error(where + "the tensor is undefined");
  if (!tensor.device().is_cpu())
    throw Error(where + "expected a tensor on the CPU, found one on " + tensor.device().str());
  const char* descr = descr_of(tensor.dtype());
  if (descr == nullptr)
    throw Error(where + "dtype " + std::string(dtype_name(tensor.dtype())) +
                " has no numpy equivalent; convert it (e.g. to float32) first");
  for (int64_t d : tensor.shape())
    if (d < 0) throw Error(where + "invalid shape " + shape_str(tensor.shape()));

  std::string shape_text = "(";
  for (std::size_t i = 0; i < tensor.shape().size(); ++i) {
    if (i) shape_text += ", ";
    shape_text += std::to_string(tensor.shape()[i]);
  }
  if (tensor.shape().size() == 1) shape_text += ",";
  shape_text += ")";
  std::string header =
      std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape_text + ", }";
  // Pad with spaces and a final newline so that the data starts at a multiple of 64 bytes.
  int major = 1;
  std::size_t prefix = kMagicLen + 2 + 2;
  std::size_t total = prefix + header.size() + 1;
  std::size_t padded = (total + 63) / 64 * 64;
  if (padded - prefix > 65535) {
    major = 2;
    prefix = kMagicLen + 2 + 4;
    total = prefix + header.size() + 1;
    padded = (total + 63) / 64 * 64;
  }
  header.append(padded - total, ' ');
  header += '\n';

  std::vector<unsigned char> data(tensor.nbytes());
  const std::size_t elem = dtype_size(tensor.dtype());
  if (!data.empty()) {
    const auto* src = static_cast<const unsigned char*>(tensor.data());
    if (tensor.is_contiguous()) {
      std::memcpy(data.data(), src, data.size());
    } else {
      gather_c_order(src, tensor.shape(), tensor.strides(), elem, data.data());
    }
    if (!host_is_little_endian() && elem > 1) byteswap_inplace(data.data(), data.size() / elem, elem);
    if (tensor.dtype() == DType::Bool)
      for (auto& b : data) b = b != 0 ? 1 : 0;
  }

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(where + "cannot open the file for writing: " + std::strerror(errno));
  out.write(kMagic, kMagicLen);
  const unsigned char version[2] = {static_cast<unsigned char>(major), 0};
  out.write(reinterpret_cast<const char*>(version), 2);
  const std::size_t hlen = header.size();
  unsigned char len[4] = {static_cast<unsigned char>(hlen & 0xff), static_cast<unsigned char>((hlen >> 8) & 0xff),
                          static_cast<unsigned char>((hlen >> 16) & 0xff),
                          static_cast<unsigned char>((hlen >> 24) & 0xff)};
  out.write(reinterpret_cast<const char*>(len), major == 1 ? 2 : 4);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) throw Error(where + "write error (disk full or I/O error)");
}

}  // namespace backbone
