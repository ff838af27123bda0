// SPDX-License-Identifier: Apache-2.0
// Hostile configs and options: each is refused with an error naming the key, the bound and the
// value found, within bounded memory and time (README.md, "Limits"). The large inputs (long
// _BASE_ chains, fan-outs, alias bombs) are generated here into a temporary folder; their
// expansion without the limits would not fit in memory or time, so passing tests show the bound.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "backbone/config.h"
#include "backbone/error.h"
#include "backbone/preprocess.h"
#include "backbone/resnet.h"
#include "backbone/tensor.h"
#include "config/py_value.h"

namespace fs = std::filesystem;
using backbone::Config;
using backbone::ConfigError;

namespace {

// A folder of generated files, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("backbone-hostile-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// The message of the backbone::Error `fn` throws ("<no error>" when it throws none).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const backbone::Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::string config_error_of(const std::string& yaml) {
  TempDir dir;
  const std::string path = dir.write("hostile.yaml", yaml);
  return error_of([&] { Config().merge_from_file(path); });
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

#define EXPECT_CONTAINS(text, part) EXPECT_TRUE(contains(text, part)) << "missing \"" << (part) << "\" in: " << (text)

}  // namespace

// ---------------------------------------------------------------------------------------------
// YAML tags: only the core schema.

TEST(HostileYaml, TagsOutsideTheCoreSchemaAreRefusedNamingTheTag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      // scalar, sequence and mapping forms of the tag detectron2's yaml.unsafe_load would execute
      {"SOLVER:\n  X: !!python/object/apply:os.system echo\n", "!!python/object/apply:os.system"},
      {"SOLVER:\n  X: !!python/object/apply:os.system [echo]\n", "!!python/object/apply:os.system"},
      {"SOLVER:\n  X: !!python/object/apply:subprocess.Popen {args: [echo]}\n",
       "!!python/object/apply:subprocess.Popen"},
      {"MODEL:\n  WEIGHTS: !!python/name:os.system\n", "!!python/name:os.system"},
      {"MODEL: !!python/object:detectron2.config.CfgNode {}\n", "!!python/object:detectron2.config.CfgNode"},
      {"SOLVER:\n  X: !!python/none\n", "!!python/none"},
      // custom tags and the tags of the wider YAML types yacs cannot hold
      {"SOLVER:\n  X: !foo 1\n", "!foo"},
      {"SOLVER:\n  X: !foo [1]\n", "!foo"},
      {"SOLVER:\n  X: !foo {A: 1}\n", "!foo"},
      {"SOLVER:\n  X: !!binary aGVsbG8=\n", "!!binary"},
      {"SOLVER:\n  X: !!set {a, b}\n", "!!set"},
      {"SOLVER:\n  X: !!omap [a: 1]\n", "!!omap"},
      {"SOLVER:\n  X: !!timestamp 2001-12-14\n", "!!timestamp"},
      {"SOLVER:\n  X: !<tag:example.com,2000:app/foo> 1\n", "tag:example.com,2000:app/foo"},
      {"SOLVER:\n  ? !!python/name:os.system\n  : 1\n", "!!python/name:os.system"},
  };
  for (const auto& [yaml, tag] : cases) {
    const std::string e = config_error_of(yaml);
    EXPECT_CONTAINS(e, "the YAML tag " + tag);
    EXPECT_CONTAINS(e, "hostile.yaml");
  }
  EXPECT_CONTAINS(config_error_of("SOLVER:\n  X: [1, !!python/tuple [2]]\n"), "key SOLVER.X[1]");
}

// detectron2's Base-RetinaNet.yaml: MODEL.ANCHOR_GENERATOR.SIZES: !!python/object/apply:eval ["..."].
// In a section this project does not read, the expression is kept as text and never evaluated; in
// the sections it reads, and in any other form, the tag is refused.
TEST(HostileYaml, DetectronsEvalTagIsKeptAsTextOnlyWhereTheBackboneReadsNothing) {
  Config cfg;
  cfg.merge_from_string(
      "MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: !!python/object/apply:eval [\"[[x, x * 2**(1.0/3)] for x in [32, 64]]\"]\n");
  EXPECT_EQ(cfg.repr("MODEL.ANCHOR_GENERATOR.SIZES"), "'[[x, x * 2**(1.0/3)] for x in [32, 64]]'");
  EXPECT_CONTAINS(config_error_of("MODEL:\n  RESNETS:\n    DEPTH: !!python/object/apply:eval [\"50\"]\n"),
                  "the YAML tag !!python/object/apply:eval");
  EXPECT_CONTAINS(config_error_of("MODEL:\n  FPN:\n    IN_FEATURES: !!python/object/apply:eval [\"['res5']\"]\n"),
                  "the YAML tag !!python/object/apply:eval");
  EXPECT_CONTAINS(config_error_of("MODEL: !!python/object/apply:eval [\"{}\"]\n"), "the YAML tag !!python/object/apply:eval");
  EXPECT_CONTAINS(config_error_of("SOLVER:\n  X: !!python/object/apply:eval [\"1\", \"2\"]\n"),
                  "the YAML tag !!python/object/apply:eval");
  EXPECT_CONTAINS(config_error_of("SOLVER:\n  X: !!python/object/apply:eval [[1]]\n"), "the YAML tag !!python/object/apply:eval");
  EXPECT_CONTAINS(config_error_of("SOLVER:\n  X: !!python/object/apply:eval \"1\"\n"), "the YAML tag !!python/object/apply:eval");
}

TEST(HostileYaml, CoreSchemaTagsStayAccepted) {
  Config cfg;
  cfg.merge_from_string(
      "SOLVER:\n  S: !!str abc\n  I: !!int \"7\"\n  F: !!float 1\n  B: !!bool true\n  N: !!null ''\n"
      "  L: !!seq [1, 2]\n  M: !!map {A: 1}\n  Q: ! [3]\n  E: !!str\n"
      "!!str INPUT: !!map\n  FORMAT: !!str RGB\n");
  EXPECT_EQ(cfg.repr("SOLVER.S"), "'abc'");
  EXPECT_EQ(cfg.repr("SOLVER.I"), "7");
  EXPECT_EQ(cfg.repr("SOLVER.F"), "1.0");
  EXPECT_EQ(cfg.repr("SOLVER.B"), "True");
  EXPECT_EQ(cfg.repr("SOLVER.N"), "None");
  EXPECT_EQ(cfg.repr("SOLVER.L"), "[1, 2]");
  EXPECT_EQ(cfg.get_int("SOLVER.M.A"), 1);
  EXPECT_EQ(cfg.repr("SOLVER.Q"), "[3]");
  EXPECT_EQ(cfg.repr("SOLVER.E"), "''");
  EXPECT_EQ(cfg.get_string("INPUT.FORMAT"), "RGB");
}

// ---------------------------------------------------------------------------------------------
// Nesting: the Python-literal parser and YAML.

TEST(HostileNesting, DeepPythonLiteralFromAnOverrideIsAnErrorNamingTheKey) {
  const std::string deep = repeat("[", 30000) + repeat("]", 30000);
  const std::string e = error_of([&] { Config().merge_from_list({"SOLVER.X", deep}); });
  EXPECT_CONTAINS(e, "key SOLVER.X");
  EXPECT_CONTAINS(e, "deeper than 200");
  // The same through a checked key and through the parser itself.
  EXPECT_CONTAINS(error_of([&] { Config().merge_from_list({"MODEL.PIXEL_MEAN", deep}); }), "key MODEL.PIXEL_MEAN");
  backbone::detail::PyValue v;
  EXPECT_THROW(backbone::detail::literal_eval(repeat("(", 30000), &v), ConfigError);
  EXPECT_THROW(backbone::detail::literal_eval(repeat("{1: ", 30000), &v), ConfigError);
}

TEST(HostileNesting, PythonLiteralNestingUpToPythonsLimitIsAccepted) {
  Config cfg;
  cfg.merge_from_list({"SOLVER.X", repeat("[", 200) + repeat("]", 200)});
  EXPECT_EQ(cfg.repr("SOLVER.X").size(), 400u);
  EXPECT_CONTAINS(error_of([&] { cfg.merge_from_list({"SOLVER.X", repeat("[", 201) + repeat("]", 201)}); }),
                  "deeper than 200");
}

TEST(HostileNesting, DeepPythonLiteralInAFileIsAnErrorNamingTheKeyAndTheFile) {
  const std::string e = config_error_of("SOLVER:\n  X: \"" + repeat("[", 30000) + repeat("]", 30000) + "\"\n");
  EXPECT_CONTAINS(e, "hostile.yaml: key SOLVER.X");
  EXPECT_CONTAINS(e, "deeper than 200");
}

TEST(HostileNesting, DeepYamlIsAnError) {
  // yaml-cpp's own parser limit, then this loader's.
  EXPECT_CONTAINS(config_error_of("SOLVER:\n  X: " + repeat("[", 30000) + repeat("]", 30000) + "\n"),
                  "is not valid YAML");
  EXPECT_CONTAINS(config_error_of("SOLVER:\n  X: " + repeat("[", 250) + repeat("]", 250) + "\n"),
                  "nests deeper than 200 levels");
  EXPECT_CONTAINS(config_error_of("SOLVER:\n  X: " + repeat("{A: ", 250) + "1" + repeat("}", 250) + "\n"),
                  "nests deeper than 200 levels");
}

// ---------------------------------------------------------------------------------------------
// Aliases and merge keys: expanded, and counted.

TEST(HostileYaml, BillionLaughsIsRefusedAtTheNodeLimit) {
  std::string yaml = "SOLVER:\n  L0: &l0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 10; ++i) {
    const std::string prev = "*l" + std::to_string(i - 1);
    yaml += "  L" + std::to_string(i) + ": &l" + std::to_string(i) + " [" + prev;
    for (int k = 1; k < 10; ++k) yaml += ", " + prev;
    yaml += "]\n";
  }
  const std::string e = config_error_of(yaml);
  EXPECT_CONTAINS(e, "more than 100000 YAML nodes");
  EXPECT_CONTAINS(e, "hostile.yaml");
}

TEST(HostileYaml, MappingAliasBombIsRefusedAtTheNodeLimit) {
  std::string yaml = "SOLVER:\n  M0: &m0 {A: 1, B: 2, C: 3, D: 4, E: 5, F: 6, G: 7, H: 8, I: 9, J: 10}\n";
  for (int i = 1; i < 10; ++i) {
    const std::string prev = "*m" + std::to_string(i - 1);
    yaml += "  M" + std::to_string(i) + ": &m" + std::to_string(i) + " {";
    for (int k = 0; k < 10; ++k) yaml += std::string(k ? ", " : "") + "K" + std::to_string(k) + ": " + prev;
    yaml += "}\n";
  }
  EXPECT_CONTAINS(config_error_of(yaml), "more than 100000 YAML nodes");
}

TEST(HostileYaml, ChainedMergeKeysAreRefusedAtTheNodeLimit) {
  std::string yaml = "SOLVER:\n  M0: &m0 {A: 1}\n";
  for (int i = 1; i < 40; ++i) {
    const std::string prev = "*m" + std::to_string(i - 1);
    yaml += "  M" + std::to_string(i) + ": &m" + std::to_string(i) + " {<<: [" + prev + ", " + prev + ", " + prev +
            "], K" + std::to_string(i) + ": 1}\n";
  }
  EXPECT_CONTAINS(config_error_of(yaml), "more than 100000 YAML nodes");
}

TEST(HostileYaml, AliasesOfALongStringAreRefusedAtTheByteLimit) {
  std::string yaml = "SOLVER:\n  S: &s \"" + std::string(1u << 20, 'x') + "\"\n  L: [*s";
  for (int i = 1; i < 100; ++i) yaml += ", *s";
  yaml += "]\n";
  EXPECT_CONTAINS(config_error_of(yaml), "more than 67108864 bytes of text");
  // Long keys through aliases too.
  std::string keys = "SOLVER:\n  K: &k " + std::string(1u << 20, 'k') + "\n  M: {";
  for (int i = 0; i < 100; ++i) keys += std::string(i ? ", " : "") + "? *k\n    : " + std::to_string(i);
  keys += "}\n";
  EXPECT_CONTAINS(config_error_of(keys), "bytes of text");
}

TEST(HostileYaml, OrdinaryAliasesAndMergeKeysStillLoad) {
  Config cfg;
  cfg.merge_from_string("SOLVER:\n  A: &a [1, 2]\n  B: *a\n  C: &c {X: 1, Y: 2}\n  D: {<<: *c, Y: 3}\n");
  EXPECT_EQ(cfg.repr("SOLVER.B"), "[1, 2]");
  EXPECT_EQ(cfg.get_int("SOLVER.D.X"), 1);
  EXPECT_EQ(cfg.get_int("SOLVER.D.Y"), 3);
}

TEST(HostileYaml, OversizedFileIsRefusedNamingTheBound) {
  const std::string e = config_error_of("SOLVER:\n  X: 1\n" + std::string(5u << 20, '#') + "\n");
  EXPECT_CONTAINS(e, "hostile.yaml");
  EXPECT_CONTAINS(e, std::to_string(4u << 20) + " bytes");
  EXPECT_CONTAINS(error_of([] { Config().merge_from_string("# " + std::string(5u << 20, 'x')); }),
                  std::to_string(4u << 20));
}

// ---------------------------------------------------------------------------------------------
// _BASE_: depth, fan-out, cycles.

TEST(HostileBase, ChainOfSixThousandFilesIsRefusedAtTheDepthLimit) {
  TempDir dir;
  const int n = 6000;
  for (int i = 0; i < n; ++i) {
    const std::string base = i + 1 < n ? "_BASE_: c" + std::to_string(i + 1) + ".yaml\n" : "";
    dir.write("c" + std::to_string(i) + ".yaml", base + "SOLVER:\n  L" + std::to_string(i) + ": 1\n");
  }
  const std::string e = error_of([&] { Config().merge_from_file(dir.path() + "/c0.yaml"); });
  EXPECT_CONTAINS(e, "at most 32 are allowed");
  EXPECT_CONTAINS(e, "c31.yaml");
  EXPECT_CONTAINS(e, "c32.yaml");
}

TEST(HostileBase, ChainAtTheDepthLimitLoads) {
  TempDir dir;
  for (int i = 0; i < 32; ++i) {
    const std::string base = i + 1 < 32 ? "_BASE_: c" + std::to_string(i + 1) + ".yaml\n" : "";
    dir.write("c" + std::to_string(i) + ".yaml", base + "SOLVER:\n  L" + std::to_string(i) + ": " +
                                                     std::to_string(i) + "\n");
  }
  Config cfg;
  cfg.merge_from_file(dir.path() + "/c0.yaml");
  EXPECT_EQ(cfg.get_int("SOLVER.L31"), 31);
  EXPECT_EQ(cfg.get_int("SOLVER.L0"), 0);
}

// Each file names the next level's file ten times: 10^20 inclusions if every _BASE_ were read
// again (the node limit would stop that with an error); read once each, it loads.
TEST(HostileBase, FanOutOfOneFileTenTimesLoadsEachFileOnce) {
  TempDir dir;
  const int levels = 20;
  for (int i = 0; i < levels; ++i) {
    std::string text;
    if (i + 1 < levels) {
      text = "_BASE_: [";
      for (int k = 0; k < 10; ++k) text += std::string(k ? ", " : "") + "f" + std::to_string(i + 1) + ".yaml";
      text += "]\n";
    }
    text += "SOLVER:\n  L" + std::to_string(i) + ": " + std::to_string(i) + "\n  LAST: " + std::to_string(i) + "\n";
    dir.write("f" + std::to_string(i) + ".yaml", text);
  }
  Config cfg;
  cfg.merge_from_file(dir.path() + "/f0.yaml");
  EXPECT_EQ(cfg.get_int("SOLVER.L19"), 19);
  EXPECT_EQ(cfg.get_int("SOLVER.LAST"), 0);  // the including file wins over its bases
}

// Two files per level, each naming both files of the next level: 2^30 paths, 60 files.
TEST(HostileBase, DiamondLatticeLoadsEachFileOnce) {
  TempDir dir;
  const int levels = 30;
  for (int i = 0; i < levels; ++i)
    for (const char* side : {"a", "b"}) {
      std::string text;
      if (i + 1 < levels)
        text = "_BASE_: [a" + std::to_string(i + 1) + ".yaml, b" + std::to_string(i + 1) + ".yaml]\n";
      text += "SOLVER:\n  " + std::string(side) + std::to_string(i) + ": 1\n";
      dir.write(side + std::to_string(i) + ".yaml", text);
    }
  Config cfg;
  cfg.merge_from_file(dir.path() + "/a0.yaml");
  EXPECT_EQ(cfg.get_int("SOLVER.a29"), 1);
  EXPECT_EQ(cfg.get_int("SOLVER.b29"), 1);
  EXPECT_FALSE(cfg.has("SOLVER.b0"));
}

TEST(HostileBase, CyclesAreStillDetected) {
  TempDir dir;
  dir.write("x.yaml", "_BASE_: [y.yaml, y.yaml]\n");
  dir.write("y.yaml", "_BASE_: z.yaml\n");
  dir.write("z.yaml", "_BASE_: x.yaml\n");
  EXPECT_CONTAINS(error_of([&] { Config().merge_from_file(dir.path() + "/x.yaml"); }), "_BASE_ cycle");
  dir.write("self.yaml", "_BASE_: ./self.yaml\n");
  EXPECT_CONTAINS(error_of([&] { Config().merge_from_file(dir.path() + "/self.yaml"); }), "_BASE_ cycle");
}

// ---------------------------------------------------------------------------------------------
// Sizes and counts of the model.

namespace {

std::string build_error(const std::vector<std::string>& overrides) {
  return error_of([&] {
    Config cfg;
    cfg.merge_from_list(overrides);
    backbone::build_resnet_backbone(cfg, backbone::ShapeSpec{3});
  });
}

}  // namespace

TEST(HostileModel, HugeStemChannelsAreRefusedBeforeAllocation) {
  const std::string e = build_error({"MODEL.RESNETS.NORM", "\"\"", "MODEL.RESNETS.OUT_FEATURES", "['stem']",
                                     "MODEL.RESNETS.STEM_OUT_CHANNELS", "7560655309122452278"});
  EXPECT_CONTAINS(e, "MODEL.RESNETS.STEM_OUT_CHANNELS must be between 1 and 65536, found 7560655309122452278");
}

TEST(HostileModel, ZeroAndNegativeCountsAreErrorsNamingTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"MODEL.RESNETS.STEM_OUT_CHANNELS", "0"},   {"MODEL.RESNETS.STEM_OUT_CHANNELS", "-64"},
      {"MODEL.RESNETS.RES2_OUT_CHANNELS", "0"},   {"MODEL.RESNETS.RES2_OUT_CHANNELS", "-256"},
      {"MODEL.RESNETS.NUM_GROUPS", "0"},          {"MODEL.RESNETS.NUM_GROUPS", "-1"},
      {"MODEL.RESNETS.WIDTH_PER_GROUP", "0"},     {"MODEL.RESNETS.WIDTH_PER_GROUP", "-64"},
      {"MODEL.RESNETS.DEFORM_NUM_GROUPS", "0"},   {"MODEL.RESNETS.DEFORM_NUM_GROUPS", "-2"},
      {"MODEL.RESNETS.STEM_OUT_CHANNELS", "65537"},
      {"MODEL.RESNETS.RES2_OUT_CHANNELS", "9223372036854775807"},
      {"MODEL.RESNETS.NUM_GROUPS", "-9223372036854775807"},
  };
  for (const auto& [key, value] : cases) {
    const std::string e = build_error({key, value, "MODEL.RESNETS.NORM", "\"\""});
    EXPECT_CONTAINS(e, key + " must be between 1 and 65536, found " + value);
  }
  // Factors whose product wraps around int64 (to 0 here, or negative): each is refused on its own,
  // before they are multiplied.
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.NUM_GROUPS", "4294967296", "MODEL.RESNETS.WIDTH_PER_GROUP",
                               "4294967296", "MODEL.RESNETS.NORM", "\"\""}),
                  "MODEL.RESNETS.NUM_GROUPS must be between 1 and 65536, found 4294967296");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.NUM_GROUPS", "-9223372036854775807", "MODEL.RESNETS.WIDTH_PER_GROUP",
                               "3", "MODEL.RESNETS.NORM", "\"\""}),
                  "MODEL.RESNETS.NUM_GROUPS must be between 1 and 65536, found -9223372036854775807");
  // The same with a norm whose folding divided by the channel count.
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.STEM_OUT_CHANNELS", "0", "MODEL.RESNETS.NORM", "FrozenBN"}),
                  "MODEL.RESNETS.STEM_OUT_CHANNELS must be between 1 and 65536, found 0");
}

TEST(HostileModel, ProductsAndStageWidthsAreBounded) {
  // groups x width overflows int64 when unchecked
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.NUM_GROUPS", "65536", "MODEL.RESNETS.WIDTH_PER_GROUP", "65536"}),
                  "NUM_GROUPS * MODEL.RESNETS.WIDTH_PER_GROUP (the bottleneck channels of res2) must be at most 65536, "
                  "found 65536 * 65536");
  // each stage doubles the widths
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.NUM_GROUPS", "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "1024"}),
                  "makes the bottleneck of res4 131072");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.NUM_GROUPS", "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "1024",
                               "MODEL.RESNETS.OUT_FEATURES", "['res2']", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32"}),
                  "parameters, more than the 268435456");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.RES2_OUT_CHANNELS", "16384", "MODEL.RESNETS.OUT_FEATURES", "['res5']"}),
                  "MODEL.RESNETS.RES2_OUT_CHANNELS = 16384 makes res5 131072 channels wide");
  // within every channel bound, but too many parameters for memory
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.WIDTH_PER_GROUP", "8192", "MODEL.RESNETS.RES2_OUT_CHANNELS", "8192"}),
                  "parameters, more than the 268435456 a model may have");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[True, False, False, False]",
                               "MODEL.RESNETS.DEFORM_MODULATED", "True", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "4096",
                               "MODEL.RESNETS.WIDTH_PER_GROUP", "4096", "MODEL.RESNETS.OUT_FEATURES", "['res2']"}),
                  "MODEL.RESNETS.DEFORM_NUM_GROUPS = 4096 asks for 110592 offset channels in res2");
}

TEST(HostileModel, OtherKeysAreChecked) {
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.RES5_DILATION", "3"}), "MODEL.RESNETS.RES5_DILATION must be 1 or 2");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.RES5_DILATION", "0"}), "res5_dilation cannot be 0");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.RES5_DILATION", "-9223372036854775807"}),
                  "res5_dilation cannot be -9223372036854775807");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.DEPTH", "0"}), "MODEL.RESNETS.DEPTH must be one of");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.DEPTH", "-50"}), "got -50");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.NORM", "'BatchNorm'"}), "MODEL.RESNETS.NORM: unknown norm");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.OUT_FEATURES", "['res6']"}), "unknown out_feature \"res6\"");
  EXPECT_CONTAINS(build_error({"MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[True]"}), "must have 4 entries");
  EXPECT_CONTAINS(error_of([] { backbone::build_resnet_backbone(Config(), backbone::ShapeSpec{0}); }),
                  "input_shape.channels must be set to a positive number");
}

TEST(HostileModel, SmallAndExtremeButValidValuesBuild) {
  Config cfg;
  cfg.merge_from_list({"MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.STEM_OUT_CHANNELS", "1",
                       "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                       "MODEL.RESNETS.OUT_FEATURES", "['res2']", "MODEL.BACKBONE.FREEZE_AT",
                       "9223372036854775807"});
  const backbone::ResNet model = backbone::build_resnet_backbone(cfg, backbone::ShapeSpec{1});
  EXPECT_EQ(model.stem().out_channels(), 1);
  EXPECT_EQ(model.stages().size(), 1u);
}

TEST(HostileModel, TheResNetApiChecksItsSizesToo) {
  EXPECT_CONTAINS(error_of([] { backbone::BasicStem(3, 0, "BN"); }),
                  "out_channels must be between 1 and 65536, found 0");
  EXPECT_CONTAINS(error_of([] { backbone::BasicStem(0, 64, "BN"); }), "in_channels must be between 1 and 65536");
  EXPECT_CONTAINS(error_of([] { backbone::BasicStem(3, int64_t{1} << 40, ""); }), "found 1099511627776");
  EXPECT_CONTAINS(error_of([] { backbone::BasicBlock(65536, 65536, 1, ""); }), "weights, more than the 268435456");
  EXPECT_CONTAINS(error_of([] { backbone::BasicBlock(64, 64, 0, ""); }), "stride must be between 1 and 1024");
  EXPECT_CONTAINS(error_of([] {
                    backbone::StageArgs a;
                    a.block_class = backbone::BlockKind::BasicBlock;
                    a.num_blocks = 1000000000;
                    a.in_channels = a.out_channels = 64;
                    backbone::ResNet::make_stage(a);
                  }),
                  "num_blocks must be between 1 and 1024");
}

// ---------------------------------------------------------------------------------------------
// Tensor sizes.

TEST(HostileTensor, NumelAndNbytesOverflowAreErrors) {
  using backbone::Tensor;
  const int64_t big = std::numeric_limits<int64_t>::max();
  EXPECT_CONTAINS(error_of([&] { Tensor::empty({big, 2}); }), "more elements than an int64 counts");
  EXPECT_CONTAINS(error_of([&] { Tensor::empty({int64_t{1} << 32, int64_t{1} << 32}); }), "int64");
  EXPECT_CONTAINS(error_of([&] { Tensor::empty({big / 2, 3}, backbone::DType::Float64); }), "int64");
  EXPECT_CONTAINS(error_of([&] { Tensor::empty({big / 2 + 1}, backbone::DType::Float32); }),
                  "more bytes than a size_t counts");
  EXPECT_CONTAINS(error_of([&] { Tensor::empty({big / 4 + 1}, backbone::DType::Float32); }), "cannot allocate");
  EXPECT_CONTAINS(error_of([&] { Tensor::zeros({7560655309122452278, 1, 7, 7}); }), "int64");
  float x = 0;
  EXPECT_CONTAINS(error_of([&] { Tensor::from_blob(&x, {big, big}, backbone::DType::Float32); }), "int64");
  EXPECT_THROW(backbone::shape_numel({big, big, big}), backbone::ShapeError);
  // A zero size: nothing to count, whatever the other sizes.
  EXPECT_EQ(backbone::shape_numel({0, big, big}), 0);
  EXPECT_EQ(Tensor::empty({big, 0}).nbytes(), 0u);
  EXPECT_EQ(Tensor::empty({0, big}).strides(), (backbone::Shape{big, 1}));
  // But the strides count a 0 as 1: they must fit an int64 too.
  EXPECT_CONTAINS(error_of([&] { Tensor::empty({0, big, 2}); }), "shape [0, " + std::to_string(big) +
                                                                      ", 2] has strides beyond an int64");
  EXPECT_CONTAINS(error_of([&] { Tensor::from_blob(&x, {2, 0, int64_t{1} << 62, 4}, backbone::DType::Float32); }),
                  "has strides beyond an int64");
  EXPECT_THROW(backbone::contiguous_strides({0, big, big}), backbone::ShapeError);
  EXPECT_CONTAINS(error_of([&] { Tensor::empty({4}).reshape({big, big, -1}); }), "int64");
}

// ---------------------------------------------------------------------------------------------
// Preprocessing sizes from INPUT.* and size_divisibility.

TEST(HostilePreprocess, ResizeAndPaddingTargetsAreBoundedBeforeAllocation) {
  std::vector<uint8_t> pixels(2 * 2 * 3, 128);
  backbone::ImageView image;
  image.data = pixels.data();
  image.width = image.height = 2;
  image.channels = 3;
  image.format = "BGR";
  auto preprocess_error = [&](const std::vector<std::string>& overrides, int64_t size_divisibility) {
    return error_of([&] {
      Config cfg;
      cfg.merge_from_list(overrides);
      backbone::PreprocessOptions o = backbone::PreprocessOptions::from_config(cfg);
      o.size_divisibility = size_divisibility;
      backbone::preprocess(image, o);
    });
  };
  EXPECT_CONTAINS(preprocess_error({"INPUT.MIN_SIZE_TEST", "9223372036854775807"}, 0),
                  "INPUT.MIN_SIZE_TEST must be below 16777216, found 9223372036854775807");
  EXPECT_CONTAINS(
      preprocess_error({"INPUT.MIN_SIZE_TEST", "16000000", "INPUT.MAX_SIZE_TEST", "9223372036854775807"}, 0),
                  "more than the 67108864 pixels allowed");
  EXPECT_CONTAINS(preprocess_error({"INPUT.MIN_SIZE_TEST", "9000", "INPUT.MAX_SIZE_TEST", "9000"}, 0),
                  "the image would become 9000x9000");
  EXPECT_CONTAINS(preprocess_error({}, int64_t{1} << 62), "size_divisibility must be between 0 and 4096");
  EXPECT_CONTAINS(preprocess_error({}, -1), "size_divisibility must be between 0 and 4096, found -1");
  EXPECT_CONTAINS(preprocess_error({"INPUT.MIN_SIZE_TEST", "-1"}, 0), "INPUT.MIN_SIZE_TEST must be >= 0");
  // detectron2's defaults and the largest padding stay accepted.
  EXPECT_EQ(preprocess_error({}, 4096), "<no error>");
}
