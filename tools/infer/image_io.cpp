// SPDX-License-Identifier: Apache-2.0
#include "image_io.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

#ifdef BACKBONE_INFER_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#endif

namespace infer {

namespace {

// Bytes of the file read for the text headers (PNM, PFM, Radiance HDR) and TIFF's first directory.
constexpr std::size_t kHeaderBytes = 1u << 16;

class HeaderReader {
 public:
  explicit HeaderReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) throw std::runtime_error("cannot read image " + path + " (missing or unreadable)");
  }

  // `n` bytes at `offset`; false when the file ends before.
  bool read(uint64_t offset, void* out, std::size_t n) {
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    if (!in_) return false;
    in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
    return static_cast<std::size_t>(in_.gcount()) == n;
  }
  // Up to `n` bytes from the start.
  std::string head(std::size_t n) {
    std::string s(n, '\0');
    in_.clear();
    in_.seekg(0);
    in_.read(&s[0], static_cast<std::streamsize>(n));
    s.resize(static_cast<std::size_t>(std::max<std::streamsize>(in_.gcount(), 0)));
    return s;
  }
  [[noreturn]] void fail(const std::string& format, const std::string& what) const {
    throw std::runtime_error("cannot read the size of image " + path_ + " (" + format + "): " + what);
  }

 private:
  std::string path_;
  std::ifstream in_;
};

uint64_t be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}
uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

ImageSize png(HeaderReader& r) {
  uint8_t b[24];
  if (!r.read(0, b, sizeof b)) r.fail("PNG", "the file ends inside the IHDR chunk");
  if (std::memcmp(b + 12, "IHDR", 4) != 0) r.fail("PNG", "the first chunk is not IHDR");
  return {static_cast<int64_t>(be(b + 16, 4)), static_cast<int64_t>(be(b + 20, 4)), "PNG"};
}

// The first start-of-frame marker (SOF0..SOF15 but DHT, JPG and DAC) after skipping the others
// (at most kMaxJpegMarkers markers and fill bytes: real files have a few dozen).
constexpr int kMaxJpegMarkers = 4096;

ImageSize jpeg(HeaderReader& r) {
  uint64_t pos = 2;
  for (int markers = 0;; ++markers) {
    if (markers == kMaxJpegMarkers)
      r.fail("JPEG", "no start-of-frame marker among the first " + std::to_string(kMaxJpegMarkers) + " markers");
    uint8_t m[2];
    if (!r.read(pos, m, 2)) r.fail("JPEG", "the file ends before a start-of-frame marker");
    if (m[0] != 0xFF) r.fail("JPEG", "expected a marker at byte " + std::to_string(pos));
    if (m[1] == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    pos += 2;
    const uint8_t marker = m[1];
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no length
    if (marker == 0xD9 || marker == 0xDA) r.fail("JPEG", "no start-of-frame marker before the image data");
    uint8_t len[2];
    if (!r.read(pos, len, 2)) r.fail("JPEG", "the file ends inside a marker segment");
    const uint64_t length = be(len, 2);
    if (length < 2) r.fail("JPEG", "a marker segment of length " + std::to_string(length));
    if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
      uint8_t sof[5];
      if (length < 7 || !r.read(pos + 2, sof, 5)) r.fail("JPEG", "a truncated start-of-frame segment");
      return {static_cast<int64_t>(be(sof + 3, 2)), static_cast<int64_t>(be(sof + 1, 2)), "JPEG"};
    }
    pos += length;
  }
}

ImageSize bmp(HeaderReader& r) {
  uint8_t b[26];
  if (!r.read(0, b, 22)) r.fail("BMP", "the file ends inside the header");
  const uint64_t dib = le(b + 14, 4);
  if (dib == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    return {static_cast<int64_t>(le(b + 18, 2)), static_cast<int64_t>(le(b + 20, 2)), "BMP"};
  }
  if (dib < 40 || !r.read(0, b, 26)) r.fail("BMP", "the file ends inside the header");
  const int32_t w = static_cast<int32_t>(le(b + 18, 4)), h = static_cast<int32_t>(le(b + 22, 4));
  // A negative height is a top-down bitmap.
  return {static_cast<int64_t>(w), h < 0 ? -static_cast<int64_t>(h) : static_cast<int64_t>(h), "BMP"};
}

// The first directory's ImageWidth (256) and ImageLength (257); BigTIFF too.
ImageSize tiff(HeaderReader& r) {
  uint8_t h[16];
  if (!r.read(0, h, 8)) r.fail("TIFF", "the file ends inside the header");
  const bool little = h[0] == 'I';
  auto num = [&](const uint8_t* p, int n) { return little ? le(p, n) : be(p, n); };
  const bool big = num(h + 2, 2) == 43;
  uint64_t ifd = 0;
  if (big) {
    if (!r.read(0, h, 16)) r.fail("TIFF", "the file ends inside the header");
    ifd = num(h + 8, 8);
  } else {
    ifd = num(h + 4, 4);
  }
  uint8_t c[8];
  if (!r.read(ifd, c, big ? 8 : 2)) r.fail("TIFF", "the first image directory is outside the file");
  const uint64_t count = num(c, big ? 8 : 2);
  const int entry = big ? 20 : 12;
  int64_t width = -1, height = -1;
  uint8_t e[20];
  for (uint64_t i = 0; i < count && i < kHeaderBytes / 12 && (width < 0 || height < 0); ++i) {
    if (!r.read(ifd + (big ? 8 : 2) + i * entry, e, entry)) r.fail("TIFF", "the file ends inside a directory");
    const uint64_t tag = num(e, 2), type = num(e + 2, 2);
    if (tag != 256 && tag != 257) continue;
    const uint8_t* value = e + (big ? 12 : 8);
    int64_t v = -1;
    if (type == 3) v = static_cast<int64_t>(num(value, 2));                             // SHORT
    else if (type == 4) v = static_cast<int64_t>(num(value, 4));                        // LONG
    else if (type == 16 && big) v = static_cast<int64_t>(num(value, 8) & 0x7fffffffffffffffULL);  // LONG8
    else r.fail("TIFF", "tag " + std::to_string(tag) + " has type " + std::to_string(type));
    (tag == 256 ? width : height) = v;
  }
  if (width < 0 || height < 0) r.fail("TIFF", "the first directory has no ImageWidth or ImageLength");
  return {width, height, "TIFF"};
}

ImageSize webp(HeaderReader& r) {
  uint8_t b[30];
  if (!r.read(0, b, 30)) r.fail("WebP", "the file ends inside the header");
  if (std::memcmp(b + 12, "VP8 ", 4) == 0) {
    if (!(b[23] == 0x9d && b[24] == 0x01 && b[25] == 0x2a)) r.fail("WebP", "no VP8 start code");
    return {static_cast<int64_t>(le(b + 26, 2) & 0x3fff), static_cast<int64_t>(le(b + 28, 2) & 0x3fff), "WebP"};
  }
  if (std::memcmp(b + 12, "VP8L", 4) == 0) {
    if (b[20] != 0x2f) r.fail("WebP", "no VP8L signature");
    const uint64_t bits = le(b + 21, 4);
    return {static_cast<int64_t>((bits & 0x3fff) + 1), static_cast<int64_t>(((bits >> 14) & 0x3fff) + 1), "WebP"};
  }
  if (std::memcmp(b + 12, "VP8X", 4) == 0)
    return {static_cast<int64_t>(le(b + 24, 3) + 1), static_cast<int64_t>(le(b + 27, 3) + 1), "WebP"};
  r.fail("WebP", "unknown first chunk");
}

// Whitespace-separated fields of a PNM/PFM header (comments from '#' to the end of the line).
class TextFields {
 public:
  explicit TextFields(const std::string& s, std::size_t pos) : s_(s), p_(pos) {}
  bool next(std::string* out) {
    for (;;) {
      while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) ++p_;
      if (p_ < s_.size() && s_[p_] == '#') {
        while (p_ < s_.size() && s_[p_] != '\n' && s_[p_] != '\r') ++p_;
        continue;
      }
      break;
    }
    const std::size_t start = p_;
    while (p_ < s_.size() && !std::isspace(static_cast<unsigned char>(s_[p_])) && s_[p_] != '#') ++p_;
    *out = s_.substr(start, p_ - start);
    return !out->empty();
  }

 private:
  const std::string& s_;
  std::size_t p_;
};

int64_t parse_size(HeaderReader& r, const std::string& format, const std::string& field) {
  if (field.empty() || field.size() > 18 || !std::all_of(field.begin(), field.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      }))
    r.fail(format, "expected a size, found '" + field.substr(0, 32) + "'");
  return std::strtoll(field.c_str(), nullptr, 10);
}

ImageSize pnm(HeaderReader& r, const std::string& head) {
  const std::string format = head[1] == 'F' || head[1] == 'f' ? "PFM" : "PNM";
  std::string key, w, h;
  if (head[1] == '7') {  // PAM: "WIDTH n" and "HEIGHT n" lines before ENDHDR
    TextFields f(head, 2);
    while (f.next(&key) && key != "ENDHDR") {
      if (key == "WIDTH" && f.next(&w)) continue;
      if (key == "HEIGHT" && f.next(&h)) continue;
    }
    if (w.empty() || h.empty()) r.fail(format, "no WIDTH and HEIGHT before ENDHDR");
  } else {
    TextFields f(head, 2);
    if (!f.next(&w) || !f.next(&h)) r.fail(format, "the file ends inside the header");
  }
  return {parse_size(r, format, w), parse_size(r, format, h), format};
}

// Radiance RGBE: header lines, an empty line, then "-Y height +X width" (or another orientation).
ImageSize hdr(HeaderReader& r, const std::string& head) {
  const std::size_t blank = head.find("\n\n");
  if (blank == std::string::npos) r.fail("Radiance HDR", "no end of the header");
  TextFields f(head, blank + 2);
  std::string a, av, b, bv;
  if (!f.next(&a) || !f.next(&av) || !f.next(&b) || !f.next(&bv) || a.size() != 2 || b.size() != 2)
    r.fail("Radiance HDR", "no resolution line");
  const int64_t first = parse_size(r, "Radiance HDR", av), second = parse_size(r, "Radiance HDR", bv);
  if (a[1] == 'Y') return {second, first, "Radiance HDR"};
  return {first, second, "Radiance HDR"};
}

}  // namespace

ImageSize read_image_size(const std::string& path) {
  HeaderReader r(path);
  const std::string head = r.head(kHeaderBytes);
  auto starts = [&](const char* magic, std::size_t n) {
    return head.size() >= n && std::memcmp(head.data(), magic, n) == 0;
  };
  if (starts("\x89PNG\r\n\x1a\n", 8)) return png(r);
  if (starts("\xff\xd8", 2)) return jpeg(r);
  if (starts("BM", 2)) return bmp(r);
  if (starts("II*\0", 4) || starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4)) return tiff(r);
  if (starts("RIFF", 4) && head.size() >= 12 && head.compare(8, 4, "WEBP") == 0) return webp(r);
  if (head.size() >= 3 && head[0] == 'P' && std::strchr("1234567Ff", head[1]) != nullptr && head[1] != '\0' &&
      std::isspace(static_cast<unsigned char>(head[2])))
    return pnm(r, head);
  if (starts("\x59\xa6\x6a\x95", 4)) {
    uint8_t b[12];
    if (!r.read(0, b, 12)) r.fail("Sun raster", "the file ends inside the header");
    return {static_cast<int64_t>(be(b + 4, 4)), static_cast<int64_t>(be(b + 8, 4)), "Sun raster"};
  }
  if (starts("#?", 2)) return hdr(r, head);
  throw std::runtime_error("cannot read image " + path +
                           ": not a PNG, JPEG, BMP, TIFF, WebP, PNM (PBM, PGM, PPM, PAM), PFM, Sun raster or "
                           "Radiance HDR file");
}

ImageSize check_image_size(const std::string& path, int64_t max_pixels) {
  const ImageSize size = read_image_size(path);
  if (size.width <= 0 || size.height <= 0)
    throw std::runtime_error("image " + path + " (" + size.format + ") is " + std::to_string(size.width) + "x" +
                             std::to_string(size.height) + " pixels: both sides must be positive");
  // Each side is below 2^32 (the widest header field): the product fits an int64.
  if (size.width > max_pixels || size.height > max_pixels || size.width * size.height > max_pixels)
    throw std::runtime_error("image " + path + " (" + size.format + ") is " + std::to_string(size.width) + "x" +
                             std::to_string(size.height) + " pixels, more than --max-image-pixels " +
                             std::to_string(max_pixels) + " (raise it to read the image)");
  return size;
}

BgrImage read_image_bgr(const std::string& path, int64_t max_pixels) {
  check_image_size(path, max_pixels);
#ifdef BACKBONE_INFER_HAVE_OPENCV
  cv::Mat m = cv::imread(path, cv::IMREAD_COLOR);
  if (m.empty()) throw std::runtime_error("cannot read image " + path + " (not an image OpenCV can decode)");
  // A decoder that disagrees with the header (or an EXIF rotation) must still fit the limit.
  if (static_cast<int64_t>(m.total()) > max_pixels)
    throw std::runtime_error("image " + path + " decodes to " + std::to_string(m.cols) + "x" + std::to_string(m.rows) +
                             " pixels, more than --max-image-pixels " + std::to_string(max_pixels));
  if (!m.isContinuous()) m = m.clone();
  BgrImage out;
  out.width = m.cols;
  out.height = m.rows;
  out.pixels.assign(m.data, m.data + m.total() * m.elemSize());
  return out;
#else
  throw std::runtime_error(
      "--image needs OpenCV's imgcodecs, which this build lacks; pass a preprocessed --input X.npy");
#endif
}

}  // namespace infer
