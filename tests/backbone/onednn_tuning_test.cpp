// SPDX-License-Identifier: Apache-2.0
// The oneDNN engine's measured choices: Winograd or direct per 3x3 layer (ConvAlgorithm::Auto) and
// fp32 or bf16 per input shape (Precision::Auto). For a given machine and tuning cache file the
// choices, and so the features, are deterministic: the tests edit the cache file and check that the
// engine follows it bit for bit. The error bounds of every choice are checked on detectron2's golden
// cases: Winograd (on every layer that has it) within 1e-5 * max |direct| per level, precision auto
// within the bf16 bound (2e-2 * max |fp32|). No timing is asserted.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backbone/backbone.h"
#include "backbone/golden_cases.h"
#include "core/tuning_cache.h"
#include "seeded_model.h"
#include "test_util.h"

using namespace backbone;
namespace fs = std::filesystem;

namespace {

bool onednn_built() {
  const auto e = available_engines();
  return std::find(e.begin(), e.end(), "onednn") != e.end();
}

Tensor make_input(int64_t n, int64_t h, int64_t w) {
  Tensor x = Tensor::empty({n, 3, h, w});
  float* p = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = 60.0f * std::sin(0.37f * static_cast<float>(i % 9973));
  return x;
}

std::unique_ptr<Engine> onednn(const ResNet& m, ConvAlgorithm a, Precision p = Precision::Float32) {
  EngineOptions o;
  o.engine = "onednn";
  o.conv_algorithm = a;
  o.precision = p;
  o.num_threads = 2;
  return create_engine(m, o);
}

void expect_identical(const FeatureMaps& a, const FeatureMaps& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].first, b[i].first) << what;
    ASSERT_EQ(a[i].second.shape(), b[i].second.shape()) << what;
    EXPECT_EQ(test::max_abs_diff(a[i].second, b[i].second), 0.0) << what << " " << a[i].first;
  }
}

// Per level: max |out - ref| <= bound * max |ref|.
void expect_within(const FeatureMaps& out, const FeatureMaps& ref, double bound, const std::string& what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(out[i].first, ref[i].first) << what;
    const double max_ref = test::max_abs(ref[i].second), err = test::max_abs_diff(out[i].second, ref[i].second);
    EXPECT_LE(err, bound * max_ref) << what << " " << ref[i].first << ": max |out - ref| = " << err
                                    << ", max |ref| = " << max_ref;
  }
}

// A private cache directory for the test, the cache reread from it; removed (and the cache reread
// from the previous setting) at the end.
class TuningCacheDir {
 public:
  TuningCacheDir() {
    const char* old = std::getenv("BACKBONE_CACHE_DIR");
    had_ = old != nullptr;
    if (had_) old_ = old;
    dir_ = fs::temp_directory_path() / ("backbone-tuning-test-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    ::setenv("BACKBONE_CACHE_DIR", dir_.c_str(), 1);
    detail::TuningCache::instance().reload();
  }
  ~TuningCacheDir() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (had_) ::setenv("BACKBONE_CACHE_DIR", old_.c_str(), 1);
    else ::unsetenv("BACKBONE_CACHE_DIR");
    detail::TuningCache::instance().reload();
  }
  fs::path file() const { return dir_ / "tuning.txt"; }
  std::string read() const {
    std::ifstream in(file());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // Every line whose key starts with `prefix` gets `choice` as its first word; the cache is reread.
  void set_choices(const std::string& prefix, const std::string& choice) {
    std::istringstream in(read());
    std::string line, out;
    while (std::getline(in, line)) {
      if (line.rfind(prefix, 0) == 0) {
        const size_t tab = line.find('\t');
        const size_t space = line.find(' ', tab);
        line = line.substr(0, tab + 1) + choice + (space == std::string::npos ? "" : line.substr(space));
      }
      out += line + "\n";
    }
    write(out);
  }
  void write(const std::string& text) {
    fs::create_directories(dir_);
    std::ofstream(file(), std::ios::trunc) << text;
    detail::TuningCache::instance().reload();
  }

 private:
  fs::path dir_;
  std::string old_;
  bool had_ = false;
};

bool has_winograd_kernels(const std::string& description) {
  return description.find("no Winograd kernel") == std::string::npos;
}

class OneDnnTuning : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!onednn_built()) GTEST_SKIP() << "the oneDNN engine is not built";
  }
};

TEST_F(OneDnnTuning, NamesRoundTrip) {
  for (auto a : {ConvAlgorithm::Auto, ConvAlgorithm::Direct, ConvAlgorithm::Winograd})
    EXPECT_EQ(conv_algorithm_from_name(conv_algorithm_name(a)), a);
  EXPECT_EQ(precision_from_name("auto"), Precision::Auto);
  EXPECT_STREQ(precision_name(Precision::Auto), "auto");
  try {
    conv_algorithm_from_name("fast");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected auto, direct or winograd"), std::string::npos) << e.what();
  }
}

TEST_F(OneDnnTuning, CachePathFollowsTheEnvironment) {
  TuningCacheDir dir;
  EXPECT_EQ(tuning_cache_path(), dir.file().string());
  ::setenv("BACKBONE_CACHE_DIR", "none", 1);
  EXPECT_EQ(tuning_cache_path(), "");
  ::setenv("BACKBONE_CACHE_DIR", "", 1);
  EXPECT_EQ(tuning_cache_path(), "");
}

// A process writes back only what it measured: lines deleted from the file (to measure again) stay
// deleted even where the process read them earlier; lines other processes added are kept.
TEST_F(OneDnnTuning, CacheWritesOnlyWhatWasMeasured) {
  TuningCacheDir dir;
  dir.write("old|key\tdirect direct_us=1\n");
  auto& cache = detail::TuningCache::instance();
  ASSERT_TRUE(cache.get("old|key").has_value());
  fs::remove(dir.file());
  {
    std::ofstream other(dir.file());
    other << "other|key\tbf16 fp32_ms=2 bf16_ms=1\n";
  }
  cache.put("new|key", "winograd direct_us=3 winograd_us=2 err=1e-07");
  const std::string text = dir.read();
  EXPECT_EQ(text.find("old|key"), std::string::npos) << text;
  EXPECT_NE(text.find("other|key\tbf16"), std::string::npos) << text;
  EXPECT_NE(text.find("new|key\twinograd direct_us=3"), std::string::npos) << text;
  const detail::TuningValue v = detail::parse_tuning_value("winograd direct_us=3 winograd_us=x err=1e-07 junk");
  EXPECT_EQ(v.choice, "winograd");
  EXPECT_EQ(v.figure("direct_us"), 3.0);
  EXPECT_EQ(v.figure("winograd_us"), 0.0);
  EXPECT_EQ(v.figure("err"), 1e-07);
}

// Auto measures each layer shape once and records it; an engine made from the same cache makes the
// same choices, and one made after the cache is edited follows the file bit for bit.
TEST_F(OneDnnTuning, WinogradChoicesFollowTheCacheFile) {
  TuningCacheDir dir;
  ResNet m = test::make_seeded_model("R-50.yaml", "['res2', 'res3', 'res4', 'res5']");
  const Tensor x = make_input(1, 64, 96);
  auto first = onednn(m, ConvAlgorithm::Auto);
  const FeatureMaps a = first->forward(x);
  const std::string d = first->describe();
  if (!has_winograd_kernels(d)) GTEST_SKIP() << "no Winograd kernel in this oneDNN: " << d;
  const std::string text = dir.read();
  ASSERT_NE(text.find("onednn conv3x3|"), std::string::npos) << "nothing recorded in " << dir.file() << ":\n" << text;
  EXPECT_NE(d.find("measured faster per layer shape"), std::string::npos) << d;

  // The same cache: the same choices, the same features.
  expect_identical(onednn(m, ConvAlgorithm::Auto)->forward(x), a, "second engine on the same cache");

  dir.set_choices("onednn conv3x3|", "winograd");
  auto all = onednn(m, ConvAlgorithm::Auto);
  const FeatureMaps w = all->forward(x);
  expect_identical(w, onednn(m, ConvAlgorithm::Winograd)->forward(x), "cache: winograd everywhere");
  const std::string dw = all->describe();
  EXPECT_NE(dw.find("Winograd 3x3 on 16 of the 16 layers"), std::string::npos) << dw;

  dir.set_choices("onednn conv3x3|", "direct");
  auto none = onednn(m, ConvAlgorithm::Auto);
  expect_identical(none->forward(x), onednn(m, ConvAlgorithm::Direct)->forward(x), "cache: direct everywhere");
  const std::string dd = none->describe();
  EXPECT_NE(dd.find("Winograd 3x3 on 0 of the 16 layers"), std::string::npos) << dd;
  EXPECT_EQ(dd.find("wino_"), std::string::npos) << dd;
}

// A damaged or foreign cache file is read as far as it makes sense and never breaks the engine.
TEST_F(OneDnnTuning, DamagedCacheFileIsIgnored) {
  TuningCacheDir dir;
  ResNet m = test::make_seeded_model("R-18.yaml", "['res2', 'res3', 'res4', 'res5']");
  const Tensor x = make_input(1, 64, 64);
  const FeatureMaps direct = onednn(m, ConvAlgorithm::Direct)->forward(x);
  std::string junk = "no tab here\n\tvalue without key\nonednn conv3x3|x\tmaybe direct_us=abc\n";
  junk += std::string(10000, 'k') + "\twinograd\n";
  junk += std::string(3, '\0') + "\n";
  dir.write(junk);
  expect_within(onednn(m, ConvAlgorithm::Auto)->forward(x), direct, 1e-5, "after a damaged cache");
  // Larger than any cache of ours: not read at all, and replaced by what the engine measures.
  dir.write(std::string(5 << 20, 'x'));
  expect_within(onednn(m, ConvAlgorithm::Auto)->forward(x), direct, 1e-5, "after an oversized cache");
  EXPECT_LT(fs::file_size(dir.file()), 1u << 20);
  // A directory that cannot be made: the choices stay in memory.
  ::setenv("BACKBONE_CACHE_DIR", "/proc/no-such-dir/backbone", 1);
  detail::TuningCache::instance().reload();
  expect_within(onednn(m, ConvAlgorithm::Auto)->forward(x), direct, 1e-5, "without a writable cache");
}

// precision auto: measured once per model and input shape, then read from the cache; editing the
// cache's choice switches the engine between its fp32 and bf16 plans, bit for bit.
TEST_F(OneDnnTuning, PrecisionAutoFollowsTheCacheFile) {
  TuningCacheDir dir;
  ResNet m = test::make_seeded_model("R-18.yaml", "['res2', 'res3', 'res4', 'res5']");
  const Tensor x = make_input(1, 64, 96);
  auto autop = onednn(m, ConvAlgorithm::Auto, Precision::Auto);
  const FeatureMaps a = autop->forward(x);
  const std::string d = autop->describe();
  const FeatureMaps f32 = onednn(m, ConvAlgorithm::Auto)->forward(x);
  if (d.find("precision auto: fp32 (bf16 needs") != std::string::npos) {
    expect_identical(a, f32, "auto without a bf16 route");
    GTEST_SKIP() << d;
  }
  ASSERT_NE(d.find("precision auto: "), std::string::npos) << d;
  ASSERT_NE(dir.read().find("onednn precision|"), std::string::npos) << dir.read();
  expect_within(a, f32, 2e-2, "precision auto against fp32");

  dir.set_choices("onednn precision|", "fp32");
  auto as32 = onednn(m, ConvAlgorithm::Auto, Precision::Auto);
  expect_identical(as32->forward(x), f32, "cache: fp32");
  EXPECT_NE(as32->describe().find("precision auto: fp32 at [1, 3, 64, 96]"), std::string::npos) << as32->describe();
  EXPECT_NE(as32->describe().find("from the tuning cache"), std::string::npos) << as32->describe();

  dir.set_choices("onednn precision|", "bf16");
  auto as16 = onednn(m, ConvAlgorithm::Auto, Precision::Auto);
  expect_identical(as16->forward(x), onednn(m, ConvAlgorithm::Auto, Precision::BFloat16)->forward(x), "cache: bf16");
  EXPECT_NE(as16->describe().find("precision auto: bf16"), std::string::npos) << as16->describe();
  EXPECT_EQ(as16->describe().rfind("onednn bf16 on cpu", 0), 0u) << as16->describe();
}

// bf16 asked for where the cache says it ran slower than fp32: the description says so.
TEST_F(OneDnnTuning, Bf16SlowerThanFp32IsReported) {
  TuningCacheDir dir;
  ResNet m = test::make_seeded_model("R-18.yaml", "['res2', 'res3', 'res4', 'res5']");
  const Tensor x = make_input(1, 64, 64);
  std::unique_ptr<Engine> e;
  try {
    e = onednn(m, ConvAlgorithm::Auto, Precision::BFloat16);
  } catch (const UnsupportedError& err) {
    GTEST_SKIP() << err.what();
  }
  e->forward(x);
  const std::string text = dir.read();
  const size_t at = text.find("onednn precision|");
  ASSERT_NE(at, std::string::npos) << text;
  // Rewrite the measurement: fp32 1 ms, bf16 3 ms.
  const size_t tab = text.find('\t', at), eol = text.find('\n', at);
  dir.write(text.substr(0, tab + 1) + "fp32 fp32_ms=1.000 bf16_ms=3.000 err=1.00e-02" + text.substr(eol));
  auto slow = onednn(m, ConvAlgorithm::Auto, Precision::BFloat16);
  slow->forward(x);
  const std::string d = slow->describe();
  EXPECT_NE(d.find("bf16 measured slower than fp32 on this CPU"), std::string::npos) << d;
  EXPECT_NE(d.find("precision auto would run fp32"), std::string::npos) << d;
}

// Every golden case of detectron2's ResNets: Winograd on every layer that has it stays within
// 1e-5 * max |direct| (the bound under which auto may use it), auto likewise, and precision auto
// within the bf16 bound of fp32 (exactly fp32 where bf16 is refused: deformable convolutions).
class GoldenTuning : public ::testing::TestWithParam<nlohmann::json> {};

TEST_P(GoldenTuning, ChoicesStayWithinTheirBounds) {
  if (!onednn_built()) GTEST_SKIP() << "the oneDNN engine is not built";
  TuningCacheDir dir;
  const auto& c = GetParam();
  SCOPED_TRACE(c.value("description", ""));
  ResNet model = test::golden::build_case(c);
  load_checkpoint(model, test::golden::kDir + c["weights"].get<std::string>(), /*strict=*/true);
  const Tensor input = load_npy(test::golden::kDir + c["input"].get<std::string>());
  const FeatureMaps direct = onednn(model, ConvAlgorithm::Direct)->forward(input);
  expect_within(onednn(model, ConvAlgorithm::Winograd)->forward(input), direct, 1e-5, "winograd everywhere");
  const FeatureMaps a = onednn(model, ConvAlgorithm::Auto)->forward(input);
  expect_within(a, direct, 1e-5, "auto");
  auto autop = onednn(model, ConvAlgorithm::Auto, Precision::Auto);
  const FeatureMaps p = autop->forward(input);
  if (c.value("deformable", false)) {
    EXPECT_NE(autop->describe().find("precision auto: fp32 (not with deformable convolutions)"), std::string::npos)
        << autop->describe();
    expect_identical(p, a, "precision auto with deformable convolutions");
  } else {
    expect_within(p, a, 2e-2, "precision auto");
  }
}

INSTANTIATE_TEST_SUITE_P(Detectron2, GoldenTuning, ::testing::ValuesIn(test::golden::load_cases()),
                         [](const ::testing::TestParamInfo<nlohmann::json>& info) {
                           std::string n = info.param.value("name", "case" + std::to_string(info.index));
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenTuning);

}  // namespace
