// SPDX-License-Identifier: Apache-2.0
// Checkpoint reading, detectron2 renaming and loading, against the files and expectations that
// tests/data/make_checkpoints.py wrote with numpy / torch / detectron2's own conversion code.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "backbone/checkpoint.h"
#include "backbone/error.h"
#include "backbone/resnet.h"
#include "checkpoint/reader.h"

namespace backbone {
namespace {

using nlohmann::json;
using namespace std::string_literals;
namespace fs = std::filesystem;

const std::string kDir = std::string(BACKBONE_TEST_DATA_DIR) + "/checkpoints/";

const json& expected() {
  static const json j = [] {
    std::ifstream f(kDir + "expected.json");
    return json::parse(f);
  }();
  return j;
}

detail::Bytes file_bytes(const std::string& name) { return detail::read_file_bytes(kDir + name); }

// Every element as a double (the values are exact in every dtype the files use).
std::vector<double> values_of(const Tensor& t) {
  Tensor d = t.to(DType::Float64).contiguous();
  const double* p = d.data_ptr<double>();
  return std::vector<double>(p, p + d.numel());
}

::testing::AssertionResult same_values(const Tensor& t, const std::string& value_id) {
  const json& v = expected()["values"].at(value_id);
  const Shape shape = v["shape"].get<Shape>();
  if (t.shape() != shape)
    return ::testing::AssertionFailure() << "shape " << shape_str(t.shape()) << ", expected " << shape_str(shape);
  const std::vector<double> got = values_of(t);
  const std::vector<double> want = v["data"].get<std::vector<double>>();
  for (std::size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i])
      return ::testing::AssertionFailure() << "element " << i << " is " << got[i] << ", expected " << want[i];
  return ::testing::AssertionSuccess();
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "(no CheckpointError)";
}

// ---- the small models of the generator, built with the C++ API ---------------------------------

StageArgs bottleneck_stage(int64_t in, int64_t out, int64_t bottleneck, int64_t stride, const std::string& norm) {
  StageArgs s;
  s.block_class = BlockKind::BottleneckBlock;
  s.num_blocks = 1;
  s.in_channels = in;
  s.out_channels = out;
  s.block.bottleneck_channels = bottleneck;
  s.block.norm = norm;
  s.stride_per_block = {stride};
  return s;
}

// A: BasicStem(3, 4) + res2 = one BottleneckBlock 4 -> 8 (bottleneck 2); `extra_stage` adds res3.
ResNet model_a(const std::string& norm = "FrozenBN", int64_t bottleneck = 2, bool extra_stage = false) {
  std::vector<Stage> stages;
  stages.push_back(ResNet::make_stage(bottleneck_stage(4, 8, bottleneck, 1, norm)));
  if (extra_stage) stages.push_back(ResNet::make_stage(bottleneck_stage(8, 8, 2, 2, norm)));
  return ResNet(std::make_unique<BasicStem>(3, 4, norm), std::move(stages), std::nullopt,
                {extra_stage ? "res3" : "res2"});
}

// B: BasicStem(3, 4) + BasicBlock 4 -> 4 + BasicBlock 4 -> 8 (stride 2) + linear(8 -> 3).
ResNet model_b() {
  std::vector<Stage> stages;
  for (auto [in, out, stride] : {std::tuple<int64_t, int64_t, int64_t>{4, 4, 1}, {4, 8, 2}}) {
    StageArgs s;
    s.block_class = BlockKind::BasicBlock;
    s.num_blocks = 1;
    s.in_channels = in;
    s.out_channels = out;
    s.block.norm = "FrozenBN";
    s.stride_per_block = {stride};
    stages.push_back(ResNet::make_stage(s));
  }
  return ResNet(std::make_unique<BasicStem>(3, 4, "FrozenBN"), std::move(stages), 3);
}

// C: BasicStem(3, 4) + res2..res5 of one BottleneckBlock each (C4 backbone + res5 head).
ResNet model_c() {
  std::vector<Stage> stages;
  stages.push_back(ResNet::make_stage(bottleneck_stage(4, 8, 2, 1, "FrozenBN")));
  for (int i = 0; i < 3; ++i) stages.push_back(ResNet::make_stage(bottleneck_stage(8, 8, 2, 2, "FrozenBN")));
  return ResNet(std::make_unique<BasicStem>(3, 4, "FrozenBN"), std::move(stages), std::nullopt, {"res5"});
}

// Whether `name` is the running_mean/running_var of a FrozenBN layer of `model`.
bool frozen_stat(const ResNet& model, const std::string& name) {
  if (name.find("running_") == std::string::npos) return false;
  const std::string prefix = name.substr(0, name.rfind(".norm."));
  auto is_frozen = [&](const std::string& conv_prefix, const Conv2d* c) {
    return conv_prefix == prefix && c->norm.kind == "FrozenBN";
  };
  for (const auto& [n, c] : std::as_const(model.stem()).convs())
    if (is_frozen("stem." + n, c)) return true;
  for (size_t s = 0; s < model.stages().size(); ++s)
    for (size_t b = 0; b < model.stages()[s].size(); ++b)
      for (const auto& [n, c] : std::as_const(*model.stages()[s][b]).convs())
        if (is_frozen(model.stage_names()[s] + "." + std::to_string(b) + "." + n, c)) return true;
  return false;
}

ResNet make_model(const std::string& which) {
  if (which == "A") return model_a();
  if (which == "B") return model_b();
  return model_c();
}

std::vector<std::string> file_names() {
  std::vector<std::string> out;
  for (const auto& [name, d] : expected()["files"].items()) out.push_back(name);
  return out;
}

// ---- reading -------------------------------------------------------------------------------------

TEST(CheckpointRead, EveryFileHasTheExpectedTensorsNamesDtypesAndValues) {
  ASSERT_EQ(file_names().size(), 18u);
  for (const auto& [name, d] : expected()["files"].items()) {
    SCOPED_TRACE(name);
    const RawCheckpoint raw = read_checkpoint_file(kDir + name);
    EXPECT_EQ(raw.author, d["author"].get<std::string>());
    EXPECT_EQ(raw.matching_heuristics, d["matching_heuristics"].get<bool>());
    const json& entries = d["raw"];
    ASSERT_EQ(raw.tensors.size(), entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) {
      SCOPED_TRACE(entries[i][0].get<std::string>());
      EXPECT_EQ(raw.tensors[i].first, entries[i][0].get<std::string>());
      EXPECT_EQ(dtype_name(raw.tensors[i].second.dtype()), entries[i][1].get<std::string>());
      EXPECT_TRUE(raw.tensors[i].second.is_contiguous());
      EXPECT_TRUE(same_values(raw.tensors[i].second, entries[i][2].get<std::string>()));
    }
  }
}

TEST(CheckpointRead, FormatsCoverPythonTwoAllProtocolsZipLegacyZip64AndSafetensors) {
  // The generator's files really are what their names say (the first bytes give it away).
  auto head = [](const std::string& n) { return *file_bytes(n); };
  EXPECT_EQ(head("c2_py2_blobs.pkl")[1], 2);  // PROTO 2
  const std::vector<uint8_t> py2 = head("c2_py2_blobs.pkl");
  EXPECT_NE(std::string(py2.begin(), py2.end()).find("U\x02" "f4"), std::string::npos);  // Python 2 str: SHORT_BINSTRING
  for (int p = 2; p <= 5; ++p) {
    const std::string n = p == 2 ? "c2_py3_proto2.pkl" : p == 3 ? "d2zoo_c4_proto3.pkl" : "d2zoo_proto" + std::to_string(p) + ".pkl";
    EXPECT_EQ(head(n)[0], 0x80);
    EXPECT_EQ(head(n)[1], p) << n;
  }
  EXPECT_EQ(head("d2zoo_proto0.pkl")[0], '(');
  EXPECT_EQ(head("d2_state_dict.pt")[0], 'P');
  EXPECT_EQ(head("legacy_c4.pth")[2], 0x8a);
  const auto z = detail::read_zip_directory(file_bytes("d2_state_dict_zip64.pth")->data(),
                                            file_bytes("d2_state_dict_zip64.pth")->size(), "zip64");
  EXPECT_EQ(z.front().name, "archive/data.pkl");
}

TEST(CheckpointRead, ExplicitFormatAndSniffingUnknownExtensions) {
  const fs::path tmp = fs::temp_directory_path() / ("backbone_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  const std::map<std::string, std::string> copies = {{"d2_state_dict.pt", "a.bin"},
                                                     {"legacy_c4.pth", "b.ckpt"},
                                                     {"d2zoo_proto4.pkl", "c.weights"},
                                                     {"d2.safetensors", "d"}};
  for (const auto& [src, dst] : copies) {
    SCOPED_TRACE(src);
    fs::copy_file(kDir + src, tmp / dst, fs::copy_options::overwrite_existing);
    const RawCheckpoint a = read_checkpoint_file(kDir + src);
    const RawCheckpoint b = read_checkpoint_file((tmp / dst).string());
    ASSERT_EQ(a.tensors.size(), b.tensors.size());
    for (std::size_t i = 0; i < a.tensors.size(); ++i) {
      EXPECT_EQ(a.tensors[i].first, b.tensors[i].first);
      EXPECT_EQ(values_of(a.tensors[i].second), values_of(b.tensors[i].second));
    }
  }
  EXPECT_EQ(read_checkpoint_file((tmp / "d").string(), CheckpointFormat::SafeTensors).tensors.size(),
            read_checkpoint_file(kDir + "d2.safetensors").tensors.size());
  EXPECT_EQ(read_checkpoint_file((tmp / "a.bin").string(), CheckpointFormat::Torch).tensors.size(), 26u);
  EXPECT_EQ(read_checkpoint_file((tmp / "c.weights").string(), CheckpointFormat::Pickle).author, "torchvision");
  // The wrong explicit format is an error, not garbage.
  EXPECT_THROW(read_checkpoint_file(kDir + "d2.safetensors", CheckpointFormat::Pickle), CheckpointError);
  EXPECT_THROW(read_checkpoint_file(kDir + "d2zoo_proto4.pkl", CheckpointFormat::SafeTensors), CheckpointError);
  EXPECT_THROW(read_checkpoint_file(kDir + "d2zoo_proto4.pkl", CheckpointFormat::Torch), CheckpointError);
  // Unknown bytes under an unknown extension.
  {
    std::ofstream(tmp / "junk.dat") << "this is not a checkpoint";
    const std::string m = message_of([&] { read_checkpoint_file((tmp / "junk.dat").string()); });
    EXPECT_NE(m.find("cannot tell the format"), std::string::npos) << m;
    EXPECT_NE(m.find("74 68 69 73"), std::string::npos) << m;
  }
  fs::remove_all(tmp);
  const std::string m = message_of([] { read_checkpoint_file(kDir + "no_such_file.pth"); });
  EXPECT_NE(m.find("cannot open checkpoint file"), std::string::npos) << m;
}

TEST(CheckpointRead, ForbiddenGlobalsAreRefusedAndNamed) {
  ASSERT_EQ(expected()["forbidden"].size(), 9u);
  for (const auto& [name, global] : expected()["forbidden"].items()) {
    SCOPED_TRACE(name);
    const std::string m = message_of([&] { read_checkpoint_file(kDir + name); });
    EXPECT_NE(m.find("forbidden global '" + global.get<std::string>() + "' in pickle"), std::string::npos) << m;
  }
}

TEST(CheckpointRead, UnsupportedDtypesAreNamed) {
  ASSERT_EQ(expected()["errors"].size(), 4u);
  for (const auto& [name, text] : expected()["errors"].items()) {
    SCOPED_TRACE(name);
    const std::string m = message_of([&] { read_checkpoint_file(kDir + name); });
    EXPECT_NE(m.find(text.get<std::string>()), std::string::npos) << m;
  }
}

// Every strict prefix of a valid file is an error (never a crash, never a huge allocation);
// the whole file reads.
TEST(CheckpointRead, TruncationAtEveryOffsetIsAnError) {
  for (const std::string name : {"c2_py2_blobs.pkl", "d2zoo_proto4.pkl", "d2zoo_proto5.pkl", "d2zoo_proto0.pkl",
                                 "d2zoo_torch_tensors.pkl", "d2_state_dict.pt", "d2_state_dict_zip64.pth",
                                 "legacy_c4.pth", "d2.safetensors"}) {
    SCOPED_TRACE(name);
    const detail::Bytes full = file_bytes(name);
    int not_rejected = 0, other_errors = 0;
    for (std::size_t n = 0; n < full->size(); ++n) {
      auto part = std::make_shared<std::vector<uint8_t>>(full->begin(), full->begin() + static_cast<std::ptrdiff_t>(n));
      try {
        detail::read_checkpoint_bytes(part, name);
        ++not_rejected;
        ADD_FAILURE() << "a prefix of " << n << " bytes was accepted";
      } catch (const CheckpointError&) {
      } catch (const std::exception& e) {
        ++other_errors;
        ADD_FAILURE() << "a prefix of " << n << " bytes: " << e.what();
      }
      if (not_rejected + other_errors > 5) break;
    }
    EXPECT_NO_THROW(detail::read_checkpoint_bytes(full, name));
  }
}

// Each byte flipped in turn: the result is either a successful read or a CheckpointError.
TEST(CheckpointRead, CorruptBytesGiveCheckpointErrorOrAValidRead) {
  for (const std::string name : {"c2_py2_blobs.pkl", "d2zoo_proto5.pkl", "d2zoo_torch_tensors.pkl", "d2_state_dict.pt",
                                 "legacy_c4.pth", "d2.safetensors"}) {
    SCOPED_TRACE(name);
    const detail::Bytes full = file_bytes(name);
    int bad = 0, rejected = 0;
    for (std::size_t i = 0; i < full->size() && bad < 5; ++i) {
      auto copy = std::make_shared<std::vector<uint8_t>>(*full);
      (*copy)[i] ^= 0xFF;
      try {
        detail::read_checkpoint_bytes(copy, name);
      } catch (const CheckpointError&) {
        ++rejected;
      } catch (const std::exception& e) {
        ++bad;
        ADD_FAILURE() << "byte " << i << " flipped: " << e.what();
      }
    }
    EXPECT_GT(rejected, 0);
  }
  // In a zip archive every data byte is covered by the CRC-32.
  const detail::Bytes zip = file_bytes("d2_state_dict.pt");
  const auto entries = detail::read_zip_directory(zip->data(), zip->size(), "zip");
  for (const auto& e : entries) {
    if (e.name.find("/data/") == std::string::npos || e.size == 0) continue;
    auto copy = std::make_shared<std::vector<uint8_t>>(*zip);
    (*copy)[e.offset + e.size / 2] ^= 0x01;
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(copy, "x.pth"); });
    EXPECT_NE(m.find("CRC-32"), std::string::npos) << m;
  }
}

TEST(CheckpointRead, CorruptZipDirectoryAndWrongMagic) {
  const detail::Bytes zip = file_bytes("d2_state_dict.pt");
  const std::string s(zip->begin(), zip->end());
  const std::size_t cd = s.find("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  {
    auto copy = std::make_shared<std::vector<uint8_t>>(*zip);
    (*copy)[cd + 2] = 0x7F;  // central directory signature
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(copy, "x.pth"); });
    EXPECT_NE(m.find("central directory entry 0 is damaged"), std::string::npos) << m;
  }
  {
    auto copy = std::make_shared<std::vector<uint8_t>>(*zip);
    (*copy)[cd + 10] = 8;  // method: deflate
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(copy, "x.pth"); });
    EXPECT_NE(m.find("is compressed (method 8)"), std::string::npos) << m;
  }
  {
    auto copy = std::make_shared<std::vector<uint8_t>>(*zip);
    for (int k = 0; k < 4; ++k) (*copy)[cd + 42 + k] = 0xEE;  // local header offset far beyond the end
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(copy, "x.pth"); });
    EXPECT_NE(m.find("bad local header"), std::string::npos) << m;
  }
  {
    auto copy = std::make_shared<std::vector<uint8_t>>(*zip);
    const std::size_t eocd = s.rfind("PK\x05\x06");
    (*copy)[eocd] = 'X';
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(copy, "x.pth"); });
    EXPECT_NE(m.find("no end of central directory"), std::string::npos) << m;
  }
  {
    auto legacy = std::make_shared<std::vector<uint8_t>>(*file_bytes("legacy_c4.pth"));
    (*legacy)[5] ^= 0x55;  // inside the magic number
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(legacy, "x.pth"); });
    EXPECT_NE(m.find("not a torch.save file"), std::string::npos) << m;
  }
  {
    auto st = std::make_shared<std::vector<uint8_t>>(*file_bytes("d2.safetensors"));
    (*st)[7] = 0x40;  // header length 2^62
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(st, "x.safetensors"); });
    EXPECT_NE(m.find("the header announces"), std::string::npos) << m;
  }
}

TEST(CheckpointRead, HugeSizesAreCheckedBeforeAllocating) {
  auto bytes = [](const std::string& s) { return std::make_shared<std::vector<uint8_t>>(s.begin(), s.end()); };
  // BINBYTES8 / BINUNICODE8 / BYTEARRAY8 / LONG4 / FRAME claiming far more than the file holds.
  for (const char op : {'\x8e', '\x8d', '\x96', '\x95'}) {
    std::string p = std::string("\x80\x05", 2) + op + std::string("\x00\x00\x00\x00\x00\x00\x00\x40", 8) + "..";
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes(p), "x.pkl"); });
    EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  }
  {
    std::string p = std::string("\x80\x02\x8b\xff\xff\xff\x7f", 7);
    EXPECT_THROW(detail::read_checkpoint_bytes(bytes(p), "x.pkl"), CheckpointError);
  }
  // safetensors: a shape far larger than its data, and offsets beyond the data.
  auto st = [&](const std::string& header) {
    std::string h = header;
    std::string len(8, '\0');
    for (int k = 0; k < 8; ++k) len[k] = static_cast<char>((h.size() >> (8 * k)) & 0xFF);
    return bytes(len + h + std::string(16, '\0'));
  };
  {
    const std::string m = message_of([&] {
      detail::read_checkpoint_bytes(st(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}})"),
                                    "x.safetensors");
    });
    EXPECT_NE(m.find("shape overflows"), std::string::npos) << m;
  }
  {
    const std::string m = message_of([&] {
      detail::read_checkpoint_bytes(st(R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})"), "x.safetensors");
    });
    EXPECT_NE(m.find("lie outside"), std::string::npos) << m;
  }
  {
    const std::string m = message_of(
        [&] { detail::read_checkpoint_bytes(st(R"({"w":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}})"), "x.safetensors"); });
    EXPECT_NE(m.find("unsupported dtype C64"), std::string::npos) << m;
  }
  {
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(st("{not json"), "x.safetensors"); });
    EXPECT_NE(m.find("JSON header"), std::string::npos) << m;
  }
  {
    // A numpy array whose shape needs more bytes than its data (Python 2 style state).
    const std::string p = "\x80\x02"s + "cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01"s + "b\x87R(K\x01"s +
                          "M\xe8\x03M\xe8\x03\x86"s + "cnumpy\ndtype\nU\x02"s + "f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x04"s +
                          "abcdtb."s;
    const std::string m = message_of([&] { detail::read_checkpoint_bytes(bytes(p), "x.pkl"); });
    EXPECT_NE(m.find("numpy array data has 4 bytes, but shape [1000, 1000] of dtype float32 needs 4000000"),
              std::string::npos)
        << m;
  }
}

TEST(CheckpointRead, PickleCornerCases) {
  auto load = [](const std::string& s) {
    return detail::read_checkpoint_bytes(std::make_shared<std::vector<uint8_t>>(s.begin(), s.end()), "x.pkl");
  };
  // Not a dict at the top.
  EXPECT_NE(message_of([&] { load("\x80\x02]q\x00."s); }).find("expected the pickled object to be a dict, found list"),
            std::string::npos);
  // A persistent id outside torch files.
  EXPECT_NE(message_of([&] { load("\x80\x02}(U\x01"s + "aU\x01"s + "bQu."s); }).find("persistent id"), std::string::npos);
  // Unknown opcode, memo miss, protocol 6.
  EXPECT_NE(message_of([&] { load("\x80\x02\xff."); }).find("unknown opcode 0xff"), std::string::npos);
  EXPECT_NE(message_of([&] { load("\x80\x02h\x07."); }).find("memo entry 7"), std::string::npos);
  EXPECT_NE(message_of([&] { load(std::string("\x80\x06}.", 4)); }).find("protocol 6"), std::string::npos);
  // A plain dict of non-tensors reads as an empty Caffe2 checkpoint.
  const RawCheckpoint r = load("(dp0\nS'a'\np1\nI1\nsS'b'\np2\nV\\u00e9\np3\ns.");
  EXPECT_TRUE(r.tensors.empty());
  EXPECT_EQ(r.author, "Caffe2");
}

// ---- names ---------------------------------------------------------------------------------------

TEST(CheckpointNames, EveryFileMapsToDetectron2NamesAsDetectron2Does) {
  for (const auto& [name, d] : expected()["files"].items()) {
    SCOPED_TRACE(name);
    const RawCheckpoint raw = read_checkpoint_file(kDir + name);
    const detail::NameMapping m = detail::map_to_detectron2(raw);
    std::map<std::string, Tensor> got(m.tensors.begin(), m.tensors.end());
    EXPECT_EQ(got.size(), m.tensors.size()) << "duplicate names";
    std::set<std::string> want_names;
    for (const auto& [n, v] : d["d2"].items()) {
      want_names.insert(n);
      ASSERT_TRUE(got.count(n)) << n;
      EXPECT_TRUE(same_values(got[n], v.get<std::string>())) << n;
    }
    std::set<std::string> got_names;
    for (const auto& [n, t] : got) got_names.insert(n);
    EXPECT_EQ(got_names, want_names);
    std::vector<std::string> ignored = m.ignored, skipped = m.skipped;
    std::sort(ignored.begin(), ignored.end());
    std::sort(skipped.begin(), skipped.end());
    EXPECT_EQ(ignored, d["ignored"].get<std::vector<std::string>>());
    EXPECT_EQ(skipped, d["skipped"].get<std::vector<std::string>>());
    // The public function gives the same tensors.
    const StateDict pub = to_detectron2_names(raw);
    ASSERT_EQ(pub.size(), m.tensors.size());
    for (std::size_t i = 0; i < pub.size(); ++i) EXPECT_EQ(pub[i].first, m.tensors[i].first);
  }
}

TEST(CheckpointNames, Caffe2Names) {
  const std::map<std::string, std::string> cases = {
      {"conv1_w", "stem.conv1.weight"},
      {"res_conv1_bn_s", "stem.conv1.norm.weight"},
      {"res_conv1_bn_b", "stem.conv1.norm.bias"},
      {"res2_0_branch1_w", "res2.0.shortcut.weight"},
      {"res2_0_branch1_bn_s", "res2.0.shortcut.norm.weight"},
      {"res3_2_branch2a_bn_rm", "res3.2.conv1.norm.running_mean"},
      {"res3_2_branch2a_bn_riv", "res3.2.conv1.norm.running_var"},
      {"res4_22_branch2b_w", "res4.22.conv2.weight"},
      {"res5_2_branch2c_bn_b", "res5.2.conv3.norm.bias"},
      {"res5_0_branch2b_gn_s", "res5.0.conv2.norm.weight"},
      {"res2_0_branch2a_bn_gamma", "res2.0.conv1.norm.weight"},
      {"res2_0_branch2a_bn_beta", "res2.0.conv1.norm.bias"},
      {"pred_w", "linear.weight"},
      {"pred_b", "linear.bias"},
      {"fc1000_w", "fc1000.weight"},
  };
  for (const auto& [c2, d2] : cases) EXPECT_EQ(detail::convert_c2_name(c2), d2) << c2;
}

RawCheckpoint fake(const std::vector<std::string>& names, const std::string& author = "") {
  RawCheckpoint r;
  r.author = author;
  for (const auto& n : names) r.tensors.emplace_back(n, Tensor::zeros({1}));
  return r;
}

std::vector<std::string> names_of(const StateDict& sd) {
  std::vector<std::string> out;
  for (const auto& kv : sd) out.push_back(kv.first);
  return out;
}

TEST(CheckpointNames, TorchvisionPrefixesC4AndDdp) {
  EXPECT_EQ(names_of(to_detectron2_names(fake({"conv1.weight", "bn1.running_var", "layer4.2.bn3.weight",
                                               "layer3.0.downsample.0.weight", "layer3.0.downsample.1.bias",
                                               "layer1.1.conv2.weight", "fc.weight", "bn1.num_batches_tracked"}))),
            (std::vector<std::string>{"stem.conv1.weight", "stem.conv1.norm.running_var", "res5.2.conv3.norm.weight",
                                      "res4.0.shortcut.weight", "res4.0.shortcut.norm.bias", "res2.1.conv2.weight",
                                      "linear.weight"}));
  EXPECT_EQ(names_of(to_detectron2_names(fake({"backbone.bottom_up.res2.0.conv1.weight", "backbone.res3.1.conv2.weight",
                                               "roi_heads.res5.2.conv3.norm.bias", "backbone.fpn_lateral3.weight",
                                               "roi_heads.box_head.fc1.weight", "pixel_std",
                                               "backbone.bottom_up.stem.conv1.norm.weight"}))),
            (std::vector<std::string>{"res2.0.conv1.weight", "res3.1.conv2.weight", "res5.2.conv3.norm.bias",
                                      "stem.conv1.norm.weight"}));
  EXPECT_EQ(names_of(to_detectron2_names(fake({"module.res2.0.conv1.weight", "module.stem.conv1.weight"}))),
            (std::vector<std::string>{"res2.0.conv1.weight", "stem.conv1.weight"}));
  // "module." is only stripped when every key has it (as fvcore does).
  EXPECT_EQ(names_of(to_detectron2_names(fake({"module.res2.0.conv1.weight", "stem.conv1.weight"}))),
            (std::vector<std::string>{"stem.conv1.weight"}));
  // Caffe2 detection blobs: heads and RPN skipped, fc1000 / conv1_b / momentum ignored.
  const detail::NameMapping m = detail::map_to_detectron2(
      fake({"conv1_w", "conv1_b", "fc1000_w", "res2_0_branch2a_w_momentum", "conv_rpn_fpn2_w", "bbox_pred_w",
            "fpn_inner_res5_2_sum_w", "res5_0_branch2b_w"},
           "Caffe2"));
  EXPECT_EQ(names_of(m.tensors), (std::vector<std::string>{"stem.conv1.weight", "res5.0.conv2.weight"}));
  EXPECT_EQ(m.ignored, (std::vector<std::string>{"conv1_b", "fc1000_w", "res2_0_branch2a_w_momentum"}));
  EXPECT_EQ(m.skipped, (std::vector<std::string>{"conv_rpn_fpn2_w", "bbox_pred_w", "fpn_inner_res5_2_sum_w"}));
  // Two entries that become the same name.
  const std::string msg = message_of([] { to_detectron2_names(fake({"backbone.res2.0.conv1.weight", "res2.0.conv1.weight"})); });
  EXPECT_NE(msg.find("both map to detectron2's 'res2.0.conv1.weight'"), std::string::npos) << msg;
}

// ---- loading -------------------------------------------------------------------------------------

TEST(CheckpointLoad, TheCppModelsHaveDetectron2sEntries) {
  for (const auto& [which, entries] : expected()["models"].items()) {
    SCOPED_TRACE(which);
    const StateDict sd = make_model(which).state_dict();
    ASSERT_EQ(sd.size(), entries.size());
    for (std::size_t i = 0; i < sd.size(); ++i) {
      EXPECT_EQ(sd[i].first, entries[i][0].get<std::string>());
      EXPECT_EQ(sd[i].second.shape(), entries[i][1].get<Shape>());
    }
  }
}

TEST(CheckpointLoad, EveryFileLoadsIntoItsModelWithExactValues) {
  int loaded_files = 0;
  for (const auto& [name, d] : expected()["files"].items()) {
    if (d["model"].is_null()) continue;
    SCOPED_TRACE(name);
    ResNet model = make_model(d["model"].get<std::string>());
    std::map<std::string, std::vector<double>> before;
    for (const auto& [n, t] : model.state_dict()) before[n] = values_of(t);
    const json& want = d["d2"];
    // FrozenBN statistics the file lacks become 0 / 1 (FrozenBatchNorm2d._load_from_state_dict).
    std::vector<std::string> missing, unexpected, fatal;
    std::set<std::string> filled;
    for (const auto& [n, t] : model.state_dict())
      if (!want.contains(n)) {
        if (frozen_stat(model, n)) {
          filled.insert(n);
          continue;
        }
        missing.push_back(n);
        fatal.push_back(n);
      }
    for (const auto& [n, v] : want.items())
      if (!before.count(n)) unexpected.push_back(n);
    LoadReport report;
    if (!fatal.empty()) {
      const std::string m = message_of([&] { load_checkpoint(model, kDir + name, true); });
      EXPECT_NE(m.find("lacks " + std::to_string(fatal.size()) + " entries of the model: [" + fatal[0]), std::string::npos)
          << m;
      report = load_checkpoint(model, kDir + name, false);
    } else {
      report = load_checkpoint(model, kDir + name);
    }
    ++loaded_files;
    EXPECT_EQ(report.missing, missing);
    std::sort(unexpected.begin(), unexpected.end());
    std::vector<std::string> got_unexpected = report.unexpected;
    std::sort(got_unexpected.begin(), got_unexpected.end());
    EXPECT_EQ(got_unexpected, unexpected);
    EXPECT_EQ(report.loaded.size() + report.missing.size() + filled.size(), before.size());
    EXPECT_EQ(report.path, kDir + name);
    for (const auto& [n, t] : model.state_dict()) {
      EXPECT_EQ(t.dtype(), DType::Float32) << n;
      if (want.contains(n)) {
        EXPECT_TRUE(same_values(t, want[n].get<std::string>())) << n;
      } else if (filled.count(n)) {
        const double v = n.find("running_var") != std::string::npos ? 1.0 : 0.0;
        for (double x : values_of(t)) EXPECT_EQ(x, v) << n;
      } else {
        EXPECT_EQ(values_of(t), before[n]) << n << " changed though the file lacks it";
      }
    }
  }
  EXPECT_EQ(loaded_files, 18);
}

TEST(CheckpointLoad, Caffe2FilesGetDetectron2sFrozenBNStatistics) {
  // Caffe2 files fold the statistics into scale and bias; detectron2's FrozenBatchNorm2d fills
  // the absent running_mean / running_var with 0 / 1 (not the 1 - eps of a fresh layer).
  ResNet model = model_a();
  const LoadReport r = load_checkpoint(model, kDir + "c2_py2_blobs.pkl");
  EXPECT_TRUE(r.missing.empty()) << r.summary();
  EXPECT_EQ(r.loaded.size(), 15u);
  for (const auto& [n, t] : model.state_dict()) {
    if (n.find("running_mean") != std::string::npos) {
      for (double v : values_of(t)) EXPECT_EQ(v, 0.0) << n;
    }
    if (n.find("running_var") != std::string::npos) {
      for (double v : values_of(t)) EXPECT_EQ(v, 1.0) << n;
    }
  }
  EXPECT_EQ(r.ignored, (std::vector<std::string>{"conv1_b", "fc1000_w", "fc1000_b"}));
  // With BatchNorm (not frozen) the statistics are real state: missing ones are an error.
  ResNet bn = model_a("BN");
  const std::string m = message_of([&] { load_checkpoint(bn, kDir + "c2_py2_blobs.pkl"); });
  EXPECT_NE(m.find("lacks 10 entries of the model: [stem.conv1.norm.running_mean"), std::string::npos) << m;
  EXPECT_EQ(load_checkpoint(bn, kDir + "c2_py2_blobs.pkl", false).missing.size(), 10u);
}

TEST(CheckpointLoad, ShapeMismatchNamesKeyShapesAndFile) {
  ResNet model = model_a("FrozenBN", 3);
  const std::string m = message_of([&] { load_checkpoint(model, kDir + "d2_state_dict.pt"); });
  EXPECT_NE(m.find("shape mismatch for res2.0.conv1.weight: the model has [3, 4, 1, 1], the checkpoint (file " + kDir +
                   "d2_state_dict.pt) has [2, 4, 1, 1]"),
            std::string::npos)
      << m;
  // The original name is given when it differs.
  const std::string m2 = message_of([&] { load_checkpoint(model, kDir + "c2_py2_blobs.pkl"); });
  EXPECT_NE(m2.find("shape mismatch for res2.0.conv1.weight: the model has [3, 4, 1, 1], the checkpoint (file " + kDir +
                    "c2_py2_blobs.pkl, entry res2_0_branch2a_w) has [2, 4, 1, 1]"),
            std::string::npos)
      << m2;
}

TEST(CheckpointLoad, MissingAndUnexpected) {
  // A file with res2 only, into a model with res3 too.
  ResNet bigger = model_a("FrozenBN", 2, true);
  const std::string m = message_of([&] { load_checkpoint(bigger, kDir + "d2.safetensors"); });
  // res3's three convolutions lack weight, norm.weight and norm.bias; their FrozenBN statistics are filled.
  EXPECT_NE(m.find("lacks 9 entries of the model: [res3.0.conv1.weight"), std::string::npos) << m;
  const LoadReport r = load_checkpoint(bigger, kDir + "d2.safetensors", false);
  EXPECT_EQ(r.missing.size(), 9u);
  EXPECT_EQ(r.loaded.size(), 25u);
  EXPECT_TRUE(r.unexpected.empty());
  // A C4 file (res2..res5) into model A: res3..res5 are unexpected, not an error.
  ResNet small = model_a();
  const LoadReport c4 = load_checkpoint(small, kDir + "legacy_c4.pth");
  EXPECT_EQ(c4.unexpected.size(), 45u);
  EXPECT_TRUE(c4.missing.empty());
  EXPECT_EQ(c4.unexpected.front(), "res3.0.conv1.weight");
  // detectron2's torchvision converter keeps fc as stem.fc: unexpected; linear is then missing.
  ResNet b = model_b();
  const LoadReport tv = load_checkpoint(b, kDir + "torchvision_converted.pkl", false);
  EXPECT_EQ(tv.missing, (std::vector<std::string>{"linear.weight", "linear.bias"}));
  EXPECT_EQ(tv.unexpected, (std::vector<std::string>{"stem.fc.weight", "stem.fc.bias"}));
  const std::string s = tv.summary();
  EXPECT_NE(s.find("loaded 30 of 32 model entries from " + kDir + "torchvision_converted.pkl"), std::string::npos) << s;
  EXPECT_NE(s.find("missing 2: [linear.weight, linear.bias]"), std::string::npos) << s;
  EXPECT_NE(s.find("unexpected 2: [stem.fc.weight, stem.fc.bias]"), std::string::npos) << s;
  EXPECT_NE(s.find("ignored 6: [stem.conv1.norm.num_batches_tracked"), std::string::npos) << s;
}

TEST(CheckpointLoad, ForbiddenGlobalInATorchFileLoadsNothing) {
  ResNet model = model_a();
  const StateDict before = model.state_dict();
  EXPECT_THROW(load_checkpoint(model, kDir + "evil_torch_zip.pth"), CheckpointError);
  const StateDict after = model.state_dict();
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_EQ(values_of(before[i].second), values_of(after[i].second));
}

}  // namespace
}  // namespace backbone
