// SPDX-License-Identifier: Apache-2.0
// Hostile checkpoint files, generated here: small files whose shared references, aliasing zip
// records, overlapping safetensors ranges, huge dicts or deep nesting once cost gigabytes of
// memory or minutes of CPU. Each must give a clean CheckpointError or a load whose memory is
// bounded, as the reader's own accounting (materialised_bytes) and the peak RSS of a forked child
// show. No timing is asserted: a quadratic reader would make these tests run for minutes.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "backbone/checkpoint.h"
#include "backbone/error.h"
#include "backbone/npy.h"
#include "backbone/resnet.h"
#include "checkpoint/reader.h"

namespace backbone {
namespace {

using namespace std::string_literals;
namespace fs = std::filesystem;

constexpr std::size_t kMiB = std::size_t{1} << 20;

detail::Bytes bytes_of(const std::string& s) { return std::make_shared<std::vector<uint8_t>>(s.begin(), s.end()); }

std::string le(uint64_t v, int n) {
  std::string s(static_cast<std::size_t>(n), '\0');
  for (int k = 0; k < n; ++k) s[static_cast<std::size_t>(k)] = static_cast<char>((v >> (8 * k)) & 0xFF);
  return s;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "(no CheckpointError)";
}

// The process's resident set size and its peak, in bytes (/proc/self/status).
std::pair<long, long> rss_and_peak() {
  std::ifstream f("/proc/self/status");
  long rss = -1, hwm = -1;
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stol(line.substr(6)) * 1024L;
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::stol(line.substr(6)) * 1024L;
  }
  return {rss, hwm};
}

// Runs `f` in a forked child and returns how much the child's peak RSS grew while it ran, in
// bytes; a failure inside `f` (or a crash) is a test failure and returns -1. The child resets its
// peak first (clear_refs 5) so that the parent's history does not hide the growth; where that is
// not possible, getrusage's ru_maxrss is used.
long peak_rss_growth(const std::function<void()>& f) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    rusage before{}, after{};
    getrusage(RUSAGE_SELF, &before);
    const bool reset = static_cast<bool>(std::ofstream("/proc/self/clear_refs") << "5" << std::flush);
    const long base = rss_and_peak().first;
    long growth = -1;
    try {
      f();
      getrusage(RUSAGE_SELF, &after);
      growth = reset && base > 0 ? rss_and_peak().second - base : (after.ru_maxrss - before.ru_maxrss) * 1024L;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "in the child: %s\n", e.what());
    }
    (void)!write(fds[1], &growth, sizeof growth);
    _exit(0);
  }
  close(fds[1]);
  long growth = -1;
  if (read(fds[0], &growth, sizeof growth) != static_cast<ssize_t>(sizeof growth)) growth = -1;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child crashed";
  EXPECT_GE(growth, 0) << "the child failed";
  return growth;
}

fs::path temp_file(const std::string& name, const std::string& data) {
  const fs::path dir = fs::temp_directory_path() / ("backbone_hostile_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path p = dir / name;
  std::ofstream(p, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
  return p;
}

// ---- pickle building blocks (protocol 2 opcodes) ------------------------------------------------

std::string unicode(const std::string& s) { return "X" + le(s.size(), 4) + s; }
std::string binbytes8(const std::string& s) { return "\x8e"s + le(s.size(), 8) + s; }
std::string int4(int32_t v) { return "J" + le(static_cast<uint32_t>(v), 4); }
std::string put(uint32_t i) { return "r" + le(i, 4); }
std::string get(uint32_t i) { return "j" + le(i, 4); }
std::string tuple_of(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (int64_t x : v) s += int4(static_cast<int32_t>(x));
  return s + "t";
}
const std::string kOrderedDict = "ccollections\nOrderedDict\n)R";

// numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') + BUILD((1, shape, dtype('<f4'), False, data))
std::string numpy_array(const std::vector<int64_t>& shape, const std::string& data_expr, bool fortran = false) {
  return "cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + tuple_of({0}) + "U\x01" "b\x87R" + "(" + int4(1) +
         tuple_of(shape) + "cnumpy\ndtype\nU\x02" "f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"s +
         (fortran ? "\x88" : "\x89") + data_expr + "tb";
}

// A Caffe2-style pickle: a dict {name_k: value_k} (detectron2 reads it as Caffe2 blobs).
std::string blobs_pickle(const std::string& first_item_setup, const std::vector<std::string>& items) {
  std::string p = "\x80\x02}(" + first_item_setup;
  for (const auto& it : items) p += it;
  return p + "u.";
}

// ---- the shared-reference repros ---------------------------------------------------------------

// One 8 MB latin-1 text, encoded by _codecs.encode once and memoized, is the data of 400 arrays.
TEST(HostileCheckpoint, CodecsEncodeOfOneTextIsDecodedOnce) {
  const std::size_t n = 8 * kMiB;
  std::string setup = unicode(std::string(n, 'a')) + put(1) + "0" + "c_codecs\nencode\n" + get(1) + unicode("latin1") +
                      "\x86R" + put(2) + "0";  // the encoded bytes in memo 2, popped
  std::vector<std::string> items;
  for (int k = 0; k < 400; ++k)
    items.push_back(unicode("blob" + std::to_string(k)) + numpy_array({static_cast<int64_t>(n / 4)}, get(2)));
  const std::string file = blobs_pickle(setup, items);
  ASSERT_LT(file.size(), 9 * kMiB);
  const RawCheckpoint raw = detail::read_checkpoint_bytes(bytes_of(file), "x.pkl");
  ASSERT_EQ(raw.tensors.size(), 400u);
  EXPECT_LE(raw.materialised_bytes, n);  // decoded once, then shared by every array
  for (const auto& [name, t] : raw.tensors) EXPECT_EQ(t.data(), raw.tensors[0].second.data()) << name;
  EXPECT_EQ(static_cast<const uint8_t*>(raw.tensors[399].second.data())[n - 1], 'a');
  // The process agrees: far below the 3.2 GB of one copy per reference.
  const long growth = peak_rss_growth([&] { detail::read_checkpoint_bytes(bytes_of(file), "x.pkl"); });
  EXPECT_LT(growth, static_cast<long>(64 * kMiB));
}

// numpy's _frombuffer over one memoized bytes object, 400 times: views of the file (or one copy).
TEST(HostileCheckpoint, FrombufferOfOneBytesObjectIsNotCopiedPerReference) {
  const std::size_t n = 8 * kMiB;
  const std::string frombuffer = "cnumpy.core.numeric\n_frombuffer\n";
  const std::string dtype = "cnumpy\ndtype\nU\x02" "f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"s;
  for (const std::size_t pad : {0u, 1u}) {  // the data aligned in the file, or not (then one copy)
    SCOPED_TRACE(pad);
    const std::string setup = unicode(std::string(pad, 'p')) + "0" + binbytes8(std::string(n, '\0')) + put(1) + "0";
    std::vector<std::string> items;
    for (int k = 0; k < 400; ++k)
      items.push_back(unicode("blob" + std::to_string(k)) + frombuffer + "(" + get(1) + dtype +
                      tuple_of({static_cast<int64_t>(n / 4)}) + unicode("C") + "tR");
    const std::string file = blobs_pickle(setup, items);
    const RawCheckpoint raw = detail::read_checkpoint_bytes(bytes_of(file), "x.pkl");
    ASSERT_EQ(raw.tensors.size(), 400u);
    EXPECT_LE(raw.materialised_bytes, n);
    const long growth = peak_rss_growth([&] { detail::read_checkpoint_bytes(bytes_of(file), "x.pkl"); });
    EXPECT_LT(growth, static_cast<long>(64 * kMiB));
  }
  // Different shapes over the same misaligned bytes need a copy each: refused past the bound.
  const std::string setup = unicode("p") + "0" + binbytes8(std::string(n, '\0')) + put(1) + "0";
  std::vector<std::string> items;
  for (int k = 0; k < 400; ++k)
    items.push_back(unicode("blob" + std::to_string(k)) + frombuffer + "(" + get(1) + dtype +
                    tuple_of({static_cast<int64_t>(n / 4) >> (k % 21), int64_t{1} << (k % 21)}) +
                    unicode(k % 2 ? "C" : "F") + "tR");
  const std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(blobs_pickle(setup, items)), "x.pkl"); });
  EXPECT_NE(m.find("needs more memory than allowed"), std::string::npos) << m;
  EXPECT_NE(m.find("the file's size + 64 MiB"), std::string::npos) << m;
}

// ---- torch.save zip archives -------------------------------------------------------------------

struct ZipFile {
  std::string out, cd;
  int count = 0;
  // Adds a stored entry whose data starts at a multiple of 64 (as torch.save aligns it).
  uint64_t add(const std::string& name, const std::string& data) {
    const uint64_t local = out.size();
    const std::size_t base = out.size() + 30 + name.size() + 4;
    const std::size_t pad = (64 - base % 64) % 64;
    const std::string extra = le(0xCAFE, 2) + le(pad, 2) + std::string(pad, 'Z');
    const uint32_t crc = detail::crc32(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    out += le(0x04034b50, 4) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(crc, 4) + le(data.size(), 4) +
           le(data.size(), 4) + le(name.size(), 2) + le(extra.size(), 2) + name + extra + data;
    entry(name, local, crc, data.size());
    return local;
  }
  // A central directory entry for the record at `local`.
  void entry(const std::string& name, uint64_t local, uint32_t crc, std::size_t size) {
    cd += le(0x02014b50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(crc, 4) + le(size, 4) +
          le(size, 4) + le(name.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(local, 4) + name;
    ++count;
  }
  std::string finish() const {
    return out + cd + le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(count, 2) + le(count, 2) + le(cd.size(), 4) +
           le(out.size(), 4) + le(0, 2);
  }
};

// _rebuild_tensor_v2(storage `key` of `numel` floats, offset, size, stride, False, OrderedDict())
std::string torch_tensor(const std::string& key, int64_t numel, int64_t offset, const std::vector<int64_t>& size,
                         const std::vector<int64_t>& stride) {
  return "ctorch._utils\n_rebuild_tensor_v2\n(" + ("(" + unicode("storage") + "ctorch\nFloatStorage\n" + unicode(key) +
                                                  unicode("cpu") + int4(static_cast<int32_t>(numel)) + "tQ") +
         int4(static_cast<int32_t>(offset)) + tuple_of(size) + tuple_of(stride) + "\x89" + kOrderedDict + "tR";
}

std::string torch_zip(const std::vector<std::string>& tensors, int64_t numel) {
  std::string pkl = "\x80\x02}(";
  for (std::size_t k = 0; k < tensors.size(); ++k) pkl += unicode("t" + std::to_string(k)) + tensors[k];
  pkl += "u.";
  ZipFile z;
  z.add("archive/data.pkl", pkl);
  z.add("archive/byteorder", "little");
  z.add("archive/data/0", std::string(static_cast<std::size_t>(numel) * 4, '\0'));
  return z.finish();
}

// One 8 MB storage shared by 400 tensors: views of the file; strided views need a copy each and
// are refused past the bound.
TEST(HostileCheckpoint, SharedTorchStorageStaysShared) {
  const int64_t numel = 2 * 1024 * 1024;
  std::vector<std::string> shared, strided;
  for (int k = 0; k < 400; ++k) {
    shared.push_back(torch_tensor("0", numel, k, {numel - 400}, {1}));
    strided.push_back(torch_tensor("0", numel, k, {1024, 2047}, {1, 1024}));
  }
  const std::string file = torch_zip(shared, numel);
  const RawCheckpoint raw = detail::read_checkpoint_bytes(bytes_of(file), "x.pth");
  ASSERT_EQ(raw.tensors.size(), 400u);
  EXPECT_EQ(raw.materialised_bytes, 0u);
  EXPECT_EQ(static_cast<const float*>(raw.tensors[1].second.data()),
            static_cast<const float*>(raw.tensors[0].second.data()) + 1);
  EXPECT_LT(peak_rss_growth([&] { detail::read_checkpoint_bytes(bytes_of(file), "x.pth"); }),
            static_cast<long>(64 * kMiB));
  const std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(torch_zip(strided, numel)), "x.pth"); });
  EXPECT_NE(m.find("needs more memory than allowed: a copy of entry"), std::string::npos) << m;
}

// A legacy torch.save stream of one float storage (what pickle.dump stores per storage).
std::string legacy_storage_stream(int64_t numel) {
  std::string s = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."s + "\x80\x02M\xe9\x03." + "\x80\x02}.";
  s += "\x80\x02(" + unicode("storage") + "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") +
       int4(static_cast<int32_t>(numel)) + "NtQ.";
  s += "\x80\x02(" + unicode("0") + "l.";
  return s + le(static_cast<uint64_t>(numel), 8) + std::string(static_cast<std::size_t>(numel) * 4, '\0');
}

// torch.storage._load_from_bytes of one memoized 8 MB bytes object, 400 times: parsed once.
TEST(HostileCheckpoint, LoadFromBytesIsParsedOncePerBytesObject) {
  const int64_t numel = 2 * 1024 * 1024;
  const std::string setup = binbytes8(legacy_storage_stream(numel)) + put(1) + "0";
  std::vector<std::string> items;
  for (int k = 0; k < 400; ++k)
    items.push_back(unicode("blob" + std::to_string(k)) + "ctorch._utils\n_rebuild_tensor_v2\n(" +
                    "ctorch.storage\n_load_from_bytes\n(" + get(1) + "tR" + int4(0) + tuple_of({numel}) +
                    tuple_of({1}) + "\x89" + kOrderedDict + "tR");
  const std::string file = blobs_pickle(setup, items);
  const RawCheckpoint raw = detail::read_checkpoint_bytes(bytes_of(file), "x.pkl");
  ASSERT_EQ(raw.tensors.size(), 400u);
  EXPECT_LE(raw.materialised_bytes, static_cast<uint64_t>(numel) * 4);
  for (const auto& [name, t] : raw.tensors) EXPECT_EQ(t.data(), raw.tensors[0].second.data()) << name;
  EXPECT_LT(peak_rss_growth([&] { detail::read_checkpoint_bytes(bytes_of(file), "x.pkl"); }),
            static_cast<long>(64 * kMiB));
}

// ---- loading into a model: only the model's entries are materialised -----------------------------

ResNet small_model() {
  StageArgs s;
  s.block_class = BlockKind::BottleneckBlock;
  s.num_blocks = 1;
  s.in_channels = 4;
  s.out_channels = 8;
  s.block.bottleneck_channels = 2;
  s.block.norm = "FrozenBN";
  s.stride_per_block = {1};
  std::vector<Stage> stages;
  stages.push_back(ResNet::make_stage(s));
  return ResNet(std::make_unique<BasicStem>(3, 4, "FrozenBN"), std::move(stages), std::nullopt, {"res2"});
}

// A Detectron1-style file: the model's blobs, misaligned (copies), plus 64 MB of _momentum blobs
// and detection heads: none of those is materialised, and the copies stay within the budget.
TEST(HostileCheckpoint, LoadMaterialisesOnlyTheModelsEntries) {
  ResNet model = small_model();
  std::string setup;
  std::vector<std::string> items;
  for (const auto& [name, t] : model.state_dict()) {
    if (name.find("running_") != std::string::npos) continue;  // Caffe2 files fold them
    // detectron2's names under "model" (a detectron2 zoo file); Fortran order needs a copy.
    std::string data(static_cast<std::size_t>(t.nbytes()), '\0');
    items.push_back(unicode(name) + numpy_array(t.shape(), "T" + le(data.size(), 4) + data, t.dim() > 1));
  }
  const std::string big(8 * kMiB, '\0');
  for (int k = 0; k < 8; ++k) {
    items.push_back(unicode("res2.0.conv" + std::to_string(k) + ".weight_momentum") +
                    numpy_array({static_cast<int64_t>(big.size() / 4)}, binbytes8(big)));
  }
  items.push_back(unicode("roi_heads.box_predictor.cls_score.weight") +
                  numpy_array({static_cast<int64_t>(big.size() / 4)}, binbytes8(big)));
  std::string model_dict = "}(" + setup;
  for (const auto& it : items) model_dict += it;
  model_dict += "u";
  const std::string file = "\x80\x02}(" + unicode("model") + model_dict + unicode("__author__") + unicode("test") + "u.";
  const fs::path path = temp_file("d1.pkl", file);
  const LoadReport r = load_checkpoint(model, path.string(), false);
  EXPECT_EQ(r.skipped.size(), 1u) << r.summary();
  EXPECT_EQ(r.ignored.size(), 8u) << r.summary();
  uint64_t model_bytes = 0;
  for (const auto& [n, t] : model.state_dict()) model_bytes += t.nbytes();
  EXPECT_GT(r.materialised_bytes, 0u);  // the Fortran-order model entries were copied
  EXPECT_LE(r.materialised_bytes, model_bytes);
  EXPECT_EQ(r.budget_bytes, model_bytes + model_bytes / 10 + (uint64_t{1} << 20));
  // 72 MB of unused entries cost nothing beyond the file itself (read once: ~72 MB).
  const long growth = peak_rss_growth([&] {
    ResNet m = small_model();
    load_checkpoint(m, path.string(), false);
  });
  EXPECT_LT(growth, static_cast<long>(72 * kMiB + 48 * kMiB));
  EXPECT_GT(growth, static_cast<long>(64 * kMiB)) << "the measurement must see the file being read";
  fs::remove_all(path.parent_path());
}

std::string latin1_as_utf8(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// An unused entry is never decoded; a file that needs more than the budget before the model's
// entries are even known (a 16 MB storage pickled by Python 3's protocol 2, decoded to be parsed)
// is refused with a message naming the limit.
TEST(HostileCheckpoint, LoadBudgetIsEnforcedAndNamed) {
  ResNet model = small_model();
  const std::size_t n = 16 * kMiB;
  const std::string text = unicode(std::string(n, 'a')) + put(1) + "0" + "c_codecs\nencode\n" + get(1) + unicode("latin1") +
                           "\x86R" + put(2) + "0";
  const fs::path unused = temp_file("unused.pkl", blobs_pickle(text, {unicode("unused_blob") + numpy_array({static_cast<int64_t>(n / 4)}, get(2))}));
  const LoadReport r = load_checkpoint(model, unused.string(), false);
  EXPECT_EQ(r.materialised_bytes, 0u) << "an unused entry was decoded";

  const int64_t numel = 4 * 1024 * 1024;
  const std::string storage = unicode(latin1_as_utf8(legacy_storage_stream(numel))) + put(1) + "0" + "c_codecs\nencode\n" +
                              get(1) + unicode("latin1") + "\x86R" + put(2) + "0";
  const std::string item = unicode("unused") + "ctorch._utils\n_rebuild_tensor_v2\n(" + "ctorch.storage\n_load_from_bytes\n(" +
                           get(2) + "tR" + int4(0) + tuple_of({numel}) + tuple_of({1}) + "\x89" + kOrderedDict + "tR";
  const std::string file = blobs_pickle(storage, {item});
  // Read on its own, it is within the raw bound (its size + 64 MiB): decoded once.
  const RawCheckpoint raw = detail::read_checkpoint_bytes(bytes_of(file), "x.pkl");
  // (decoded once; the storage inside is misaligned in the decoded bytes: one copy of it)
  EXPECT_GE(raw.materialised_bytes, legacy_storage_stream(numel).size());
  EXPECT_LE(raw.materialised_bytes, legacy_storage_stream(numel).size() + static_cast<uint64_t>(numel) * 4);
  const fs::path path = temp_file("proto2_storage.pkl", file);
  const std::string m = message_of([&] { load_checkpoint(model, path.string(), false); });
  EXPECT_NE(m.find("needs more memory than allowed: the latin-1 bytes of a str"), std::string::npos) << m;
  EXPECT_NE(m.find("the model's tensors at 8 bytes per element + 10% + 1 MiB"), std::string::npos) << m;
  fs::remove_all(path.parent_path());
}

// ---- safetensors --------------------------------------------------------------------------------

std::string safetensors(const std::string& header, std::size_t data_size) {
  return le(header.size(), 8) + header + std::string(data_size, '\0');
}

TEST(HostileCheckpoint, SafetensorsOverlapsDuplicatesAndHolesAreRefused) {
  // 400 tensors over the same 8 MB range: the format forbids overlaps.
  std::string h = "{";
  for (int k = 0; k < 400; ++k)
    h += (k ? ","s : ""s) + "\"t" + std::to_string(k) + "\":{\"dtype\":\"F32\",\"shape\":[2097152],\"data_offsets\":[0,8388608]}";
  h += "}";
  std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(safetensors(h, 8 * kMiB)), "x.safetensors"); });
  EXPECT_NE(m.find("overlap the data of tensor 't"), std::string::npos) << m;
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string b = R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})";
  const std::string a2 = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})";
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(safetensors("{" + a + "," + a2 + "}", 16)), "x.safetensors"); });
  EXPECT_NE(m.find("tensor 'a' is named twice"), std::string::npos) << m;
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(safetensors("{" + a + "}", 16)), "x.safetensors"); });
  EXPECT_NE(m.find("the tensors' data ends at byte 8 of the 16 data bytes"), std::string::npos) << m;
  const std::string b_late = R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]})";
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(safetensors("{" + a + "," + b_late + "}", 20)), "x.safetensors"); });
  EXPECT_NE(m.find("leave a hole of 4 bytes after byte 8"), std::string::npos) << m;
  // In any order, covering the data exactly: read, as views of the file.
  const RawCheckpoint ok = detail::read_checkpoint_bytes(bytes_of(safetensors("{" + b + "," + a + "}", 16)), "x.safetensors");
  EXPECT_EQ(ok.tensors.size(), 2u);
  EXPECT_EQ(ok.materialised_bytes, 0u);
  // Deep nesting and oversized headers.
  m = message_of([&] {
    detail::read_checkpoint_bytes(bytes_of(safetensors("{\"a\":{\"shape\":[[[[[1]]]]]}}", 0)), "x.safetensors");
  });
  EXPECT_NE(m.find("nests deeper than 3 levels"), std::string::npos) << m;
  std::string huge = le(100'000'001, 8) + "{" + std::string(100'000'001, ' ');
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(huge), "x.safetensors"); });
  EXPECT_NE(m.find("more than the format's limit of 100000000"), std::string::npos) << m;
  std::string dims;
  for (int k = 0; k < 65; ++k) dims += k ? ",1" : "1";
  m = message_of([&] {
    detail::read_checkpoint_bytes(
        bytes_of(safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[" + dims + "],\"data_offsets\":[0,4]}}", 4)),
        "x.safetensors");
  });
  EXPECT_NE(m.find("shape has 65 dimensions, at most 64"), std::string::npos) << m;
}

// ---- zip aliasing --------------------------------------------------------------------------------

TEST(HostileCheckpoint, ZipEntriesAliasingOneRecordAreRefused) {
  const int64_t numel = 2 * 1024 * 1024;
  std::string pkl = "\x80\x02}(";
  for (int k = 0; k < 20000; ++k)
    pkl += unicode("t" + std::to_string(k)) + torch_tensor(std::to_string(k), numel, 0, {numel}, {1});
  pkl += "u.";
  ZipFile z;
  z.add("archive/data.pkl", pkl);
  const std::string data(static_cast<std::size_t>(numel) * 4, '\0');
  const uint64_t local = z.add("archive/data/0", data);
  const uint32_t crc = detail::crc32(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  for (int k = 1; k < 20000; ++k) z.entry("archive/data/" + std::to_string(k), local, crc, data.size());
  const std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(z.finish()), "x.pth"); });
  EXPECT_NE(m.find("zip archive x.pth: entries archive/data/"), std::string::npos) << m;
  EXPECT_NE(m.find("overlap (the record at byte " + std::to_string(local) + " lies inside the one at byte " +
                   std::to_string(local)),
            std::string::npos)
      << m;
  // Two entries of one name.
  ZipFile d;
  d.add("archive/data.pkl", "\x80\x02}.");
  d.add("archive/data.pkl", "\x80\x02}.");
  const std::string m2 = message_of([&] { detail::read_checkpoint_bytes(bytes_of(d.finish()), "x.pth"); });
  EXPECT_NE(m2.find("two entries are named archive/data.pkl"), std::string::npos) << m2;
}

// ---- linear time and bounded structures -----------------------------------------------------------

// A dict of 200,000 keys (a quadratic insertion took minutes); a key set twice keeps its last value.
TEST(HostileCheckpoint, DictOf200kKeysIsLinear) {
  std::string p = "\x80\x02}(";
  for (int k = 0; k < 200000; ++k) p += unicode("key_number_" + std::to_string(k)) + "N";
  p += "u(" + unicode("w") + numpy_array({1}, "U\x04" "\x00\x00\x80\x3f"s) + "u(" + unicode("w") +
       numpy_array({1}, "U\x04" "\x00\x00\x00\x40"s) + "u.";
  ASSERT_GT(p.size(), 3 * kMiB);
  const RawCheckpoint raw = detail::read_checkpoint_bytes(bytes_of(p), "x.pkl");
  ASSERT_EQ(raw.tensors.size(), 1u);
  EXPECT_EQ(raw.tensors[0].first, "w");
  EXPECT_EQ(raw.tensors[0].second.data_ptr<float>()[0], 2.0f);
  // The same key 200,000 times through SETITEM.
  std::string q = "\x80\x02}" + unicode("k") + put(0) + "N";
  q += "s";
  for (int k = 0; k < 200000; ++k) q += get(0) + "Ns";
  q += ".";
  EXPECT_TRUE(detail::read_checkpoint_bytes(bytes_of(q), "x.pkl").tensors.empty());
}

TEST(HostileCheckpoint, DeepNestingManyObjectsAndCopiedContainersAreBounded) {
  // A million nested lists: no recursion anywhere (building, reading, freeing).
  std::string deep = "\x80\x02";
  for (int k = 0; k < 1000000; ++k) deep += "]";
  for (int k = 0; k < 999999; ++k) deep += "a";
  deep += ".";
  std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(deep), "x.pkl"); });
  EXPECT_NE(m.find("expected the pickled object to be a dict, found list"), std::string::npos) << m;
  // Two million objects from two million bytes.
  std::string many = "\x80\x02(" + std::string(2100000, 'N') + "l.";
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(many), "x.pkl"); });
  EXPECT_NE(m.find("more than 1048576 objects"), std::string::npos) << m;
  // OrderedDict() of one memoized 100k-key dict, 1000 times.
  std::string copies = "\x80\x02}(";
  for (int k = 0; k < 100000; ++k) copies += unicode("k" + std::to_string(k)) + "N";
  copies += "u" + put(0) + "0(";
  for (int k = 0; k < 1000; ++k) copies += "ccollections\nOrderedDict\n(" + get(0) + "tR";
  copies += "l.";
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(copies), "x.pkl"); });
  EXPECT_NE(m.find("copies more than 4194304 container items"), std::string::npos) << m;
  // A memo index no pickler writes (they count from 0).
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of("\x80\x02}" + put(0x7fffffff) + "."), "x.pkl"); });
  EXPECT_NE(m.find("memo index 2147483647 is beyond the limit of 1048576 entries"), std::string::npos) << m;
  // A shape of 65 dimensions.
  std::vector<int64_t> dims(65, 1);
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(blobs_pickle("", {unicode("w") + numpy_array(dims, "U\x04" "abcd")})), "x.pkl"); });
  EXPECT_NE(m.find("65 dimensions, at most 64"), std::string::npos) << m;
  // A tensor's shape times its element size beyond its storage.
  m = message_of([&] {
    detail::read_checkpoint_bytes(bytes_of(torch_zip({torch_tensor("0", 4, 0, {1 << 30, 1 << 30}, {1, 1})}, 4)), "x.pth");
  });
  EXPECT_NE(m.find("of a storage of 4 elements"), std::string::npos) << m;
}

// ---- .npy ------------------------------------------------------------------------------------------

TEST(HostileCheckpoint, NpyShapesAreChecked) {
  auto npy = [](const std::string& header, std::size_t data) {
    std::string h = header;
    while ((10 + h.size() + 1) % 64) h += ' ';
    h += '\n';
    return "\x93NUMPY\x01\x00"s + le(h.size(), 2) + h + std::string(data, '\0');
  };
  auto load_error = [](const std::string& content) {
    const fs::path p = temp_file("x.npy", content);
    std::string m = "(no error)";
    try {
      load_npy(p.string());
    } catch (const Error& e) {
      m = e.what();
    }
    fs::remove_all(p.parent_path());
    return m;
  };
  std::string m = load_error(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }", 16));
  EXPECT_NE(m.find("too many elements"), std::string::npos) << m;
  std::string dims = "(";
  for (int k = 0; k < 65; ++k) dims += "1, ";
  m = load_error(npy("{'descr': '<f4', 'fortran_order': False, 'shape': " + dims + "), }", 4));
  EXPECT_NE(m.find("65 dimensions, at most 64"), std::string::npos) << m;
}

// ---- empty tensors whose other sizes are huge ------------------------------------------------------

// A size of 0 leaves nothing to read, so the element count fits whatever the other sizes are; but
// the row-major strides count a 0 as 1 and must still fit an int64. Found by fuzz_npy: the
// stride computation overflowed (undefined behaviour) on the shape below.
TEST(HostileCheckpoint, EmptyTensorsWhoseStridesOverflowAreRefused) {
  // The fuzzer's reproducer, minimised (a 118-byte header, no data), then the same array in C order.
  for (const std::string order : {"True", "False"}) {
    const std::string dict = "{'descr': '|u1', 'fortran_order': " + order + ", 'shape': (0, 8888888888888888884, 4), }";
    const std::string file = "\x93NUMPY\x01\x00\x76\x00"s + dict + std::string(118 - dict.size(), ' ');
    const fs::path p = temp_file("x.npy", file);
    std::string m = "(no error)";
    try {
      load_npy(p.string());
    } catch (const Error& e) {
      m = e.what();
    }
    fs::remove_all(p.parent_path());
    EXPECT_NE(m.find("load_npy: '"), std::string::npos) << m;
    EXPECT_NE(m.find("shape [0, 8888888888888888884, 4] has strides beyond an int64"), std::string::npos) << m;
  }
  // 2^62 in a pickle: LONG1 with 8 bytes.
  auto tuple64 = [](const std::vector<int64_t>& v) {
    std::string t = "(";
    for (int64_t x : v) t += "\x8a\x08"s + le(static_cast<uint64_t>(x), 8);
    return t + "t";
  };
  const int64_t huge = int64_t{1} << 62;
  // torch.save: _rebuild_tensor_v2 of size (0, 2^62, 4), strides whose view stays small.
  const std::string tensor = "ctorch._utils\n_rebuild_tensor_v2\n(" +
                             ("(" + unicode("storage") + "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") +
                              int4(4) + "tQ") +
                             int4(0) + tuple64({0, huge, 4}) + tuple64({0, 1, 1}) + "\x89" + kOrderedDict + "tR";
  std::string pkl = "\x80\x02}(" + unicode("t") + tensor + "u.";
  ZipFile z;
  z.add("archive/data.pkl", pkl);
  z.add("archive/byteorder", "little");
  z.add("archive/data/0", std::string(16, '\0'));
  std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(z.finish()), "x.pth"); });
  EXPECT_NE(m.find("size [0, 4611686018427387904, 4] overflows (its strides do not fit an int64)"), std::string::npos)
      << m;
  // A numpy array of that shape in a Caffe2-style pickle.
  const std::string array = "cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + tuple_of({0}) + "U\x01" "b\x87R" +
                            "(" + int4(1) + tuple64({0, huge, 4}) +
                            "cnumpy\ndtype\nU\x02" "f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"s +
                            "\x89" + binbytes8("") + "tb";
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(blobs_pickle("", {unicode("a") + array})), "x.pkl"); });
  EXPECT_NE(m.find("numpy array shape [0, 4611686018427387904, 4] overflows"), std::string::npos) << m;
  // safetensors: the format's own check (a checked product of the sizes) passes, as it stops at 0.
  const std::string h = R"({"a":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})";
  m = message_of([&] { detail::read_checkpoint_bytes(bytes_of(safetensors(h, 0)), "x.safetensors"); });
  EXPECT_NE(m.find("tensor 'a': shape [0, 4611686018427387904, 4] overflows (its strides do not fit an int64)"),
            std::string::npos)
      << m;
  // Empty tensors whose strides fit stay valid.
  const std::string ok = R"({"a":{"dtype":"F32","shape":[0,1152921504606846976,2],"data_offsets":[0,0]}})";
  const RawCheckpoint raw = detail::read_checkpoint_bytes(bytes_of(safetensors(ok, 0)), "x.safetensors");
  ASSERT_EQ(raw.tensors.size(), 1u);
  EXPECT_EQ(raw.tensors[0].second.numel(), 0);
  EXPECT_EQ(raw.tensors[0].second.strides(), (Shape{int64_t{1} << 61, 2, 1}));
}

}  // namespace
}  // namespace backbone
