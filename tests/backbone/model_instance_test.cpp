// SPDX-License-Identifier: Apache-2.0
// ModelInstance: sharing by id (settings that must agree, freed with the last user) and batching
// across streams (features per frame equal to a batch of one, batches by shape, flushing one stream
// leaves the others alone, the timeout lets a lone frame run, errors reach every frame of a batch).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "backbone/backbone.h"

namespace backbone {
namespace {

std::string data_path(const std::string& name) { return std::string(BACKBONE_TEST_DATA_DIR) + "/plugin/" + name; }

// The narrow R-50 of the element tests, one thread.
ModelSpec narrow_spec() {
  ModelSpec s;
  s.config_file = data_path("narrow.yaml");
  s.num_threads = 1;
  return s;
}

// A deterministic RGB frame of w x h whose content depends on `seed`.
struct TestFrame {
  std::vector<uint8_t> pixels;
  FrameView view;
  TestFrame(int w, int h, int seed) : pixels(static_cast<size_t>(w) * h * 3) {
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 7 + static_cast<size_t>(seed) * 31) % 251);
    view.format = PixelFormat::RGB;
    view.width = w;
    view.height = h;
    view.planes[0] = pixels.data();
    view.strides[0] = w * 3;
  }
};

double max_rel_diff(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu()).contiguous(), y = b.to(Device::cpu()).contiguous();
  EXPECT_EQ(x.shape(), y.shape());
  if (x.shape() != y.shape()) return 1e30;
  const float* p = x.data_ptr<float>();
  const float* q = y.data_ptr<float>();
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(p[i] - q[i])));
    ref = std::max(ref, static_cast<double>(std::fabs(q[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

TEST(ModelInstance, SameIdSharesOneModelAndIsFreedWithTheLastUser) {
  std::weak_ptr<ModelInstance> weak;
  {
    auto a = ModelInstance::acquire("share-test", narrow_spec(), {});
    auto b = ModelInstance::acquire("share-test", narrow_spec(), {});
    EXPECT_EQ(a.get(), b.get());
    EXPECT_EQ(&a->model(), &b->model());
    auto other = ModelInstance::acquire("share-test-other", narrow_spec(), {});
    EXPECT_NE(a.get(), other.get());
    weak = a;
    auto stream = a->open_stream();
    a.reset();
    b.reset();
    EXPECT_FALSE(weak.expired()) << "a stream keeps its instance";
  }
  EXPECT_TRUE(weak.expired());
}

TEST(ModelInstance, MismatchedSettingsAreRefusedNamingTheSettingAndBothValues) {
  auto a = ModelInstance::acquire("mismatch-test", narrow_spec(), {2, 0});
  ModelSpec other = narrow_spec();
  other.num_threads = 2;
  try {
    ModelInstance::acquire("mismatch-test", other, {2, 0});
    FAIL() << "expected InstanceMismatch";
  } catch (const InstanceMismatch& e) {
    EXPECT_EQ(e.setting(), "num-threads");
    EXPECT_EQ(e.ours(), "2");
    EXPECT_EQ(e.theirs(), "1");
    EXPECT_NE(std::string(e.what()).find("mismatch-test"), std::string::npos) << e.what();
  }
  try {
    ModelInstance::acquire("mismatch-test", narrow_spec(), {4, 0});
    FAIL() << "expected InstanceMismatch";
  } catch (const InstanceMismatch& e) {
    EXPECT_EQ(e.setting(), "batch-size");
  }
  ModelSpec weights = narrow_spec();
  weights.weights = data_path("does-not-matter.pth");
  EXPECT_THROW(ModelInstance::acquire("mismatch-test", weights, {2, 0}), InstanceMismatch);
}

TEST(ModelInstance, BadOptionsAndFailedLoadsRegisterNothing) {
  EXPECT_THROW(ModelInstance::acquire("", narrow_spec(), {}), Error);
  EXPECT_THROW(ModelInstance::acquire("bad", narrow_spec(), {0, 0}), Error);
  EXPECT_THROW(ModelInstance::acquire("bad", narrow_spec(), {1, -1}), Error);
  ModelSpec broken = narrow_spec();
  broken.config_file = "/nonexistent.yaml";
  EXPECT_THROW(ModelInstance::acquire("bad", broken, {}), ModelError);
  // The id is free for a load that works.
  EXPECT_NO_THROW(ModelInstance::acquire("bad", narrow_spec(), {}));
}

TEST(ModelInstance, FourStreamsBatchedEqualSingleFrameRuns) {
  auto inst = ModelInstance::acquire("batch-test", narrow_spec(), {4, 2'000'000'000});
  auto reference = ModelInstance::create(narrow_spec(), {});
  constexpr int kStreams = 4, kFrames = 3;
  std::vector<std::vector<BatchResult>> results(kStreams);
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s)
    threads.emplace_back([&, s] {
      auto stream = inst->open_stream();
      for (int f = 0; f < kFrames; ++f) {
        TestFrame frame(64, 48, s * 10 + f);
        results[static_cast<size_t>(s)].push_back(stream->infer(frame.view));
      }
    });
  for (auto& t : threads) t.join();
  auto ref_stream = reference->open_stream();
  int batched = 0;
  for (int s = 0; s < kStreams; ++s)
    for (int f = 0; f < kFrames; ++f) {
      const BatchResult& r = results[static_cast<size_t>(s)][static_cast<size_t>(f)];
      ASSERT_EQ(r.status, BatchResult::Status::Done);
      if (r.batch_size > 1) ++batched;
      TestFrame frame(64, 48, s * 10 + f);
      const BatchResult one = ref_stream->infer(frame.view);
      ASSERT_EQ(one.batch_size, 1);
      ASSERT_EQ(r.features.size(), one.features.size());
      for (size_t l = 0; l < one.features.size(); ++l) {
        EXPECT_EQ(r.features[l].first, one.features[l].first);
        EXPECT_EQ(r.features[l].second.size(0), 1);
        EXPECT_LT(max_rel_diff(r.features[l].second, one.features[l].second), 1e-5)
            << "stream " << s << " frame " << f << " level " << one.features[l].first;
      }
    }
  // With a 2 s timeout and four streams submitting together, frames meet in batches.
  EXPECT_GT(batched, 0);
  const InstanceStats st = inst->stats();
  EXPECT_EQ(st.frames, static_cast<uint64_t>(kStreams * kFrames));
  uint64_t counted = 0;
  for (size_t k = 1; k < st.batches_by_size.size(); ++k) counted += k * st.batches_by_size[k];
  EXPECT_EQ(counted, st.frames);
}

TEST(ModelInstance, FramesOfDifferentSizesRunInSeparateBatches) {
  auto inst = ModelInstance::acquire("sizes-test", narrow_spec(), {2, 200'000'000});
  BatchResult a, b;
  std::thread ta([&] {
    TestFrame f(64, 48, 1);
    a = inst->open_stream()->infer(f.view);
  });
  std::thread tb([&] {
    TestFrame f(96, 64, 2);
    b = inst->open_stream()->infer(f.view);
  });
  ta.join();
  tb.join();
  ASSERT_EQ(a.status, BatchResult::Status::Done);
  ASSERT_EQ(b.status, BatchResult::Status::Done);
  EXPECT_EQ(a.batch_size, 1);
  EXPECT_EQ(b.batch_size, 1);
}

TEST(ModelInstance, ALoneFrameRunsAfterTheTimeout) {
  // batch-size 4 and nobody else: the frame runs alone once the timeout has passed.
  auto inst = ModelInstance::acquire("timeout-test", narrow_spec(), {4, 50'000'000});
  auto stream = inst->open_stream();
  TestFrame f(64, 48, 3);
  const BatchResult r = stream->infer(f.view);
  ASSERT_EQ(r.status, BatchResult::Status::Done);
  EXPECT_EQ(r.batch_size, 1);
  EXPECT_GE(r.waited_ns, 50'000'000);
}

TEST(ModelInstance, FlushingOneStreamDropsOnlyItsWaitingFrames) {
  // A long timeout: both frames wait; flushing stream A returns A's frame, B's waits on and runs.
  auto inst = ModelInstance::acquire("flush-test", narrow_spec(), {4, 1'000'000'000});
  auto a = inst->open_stream();
  auto b = inst->open_stream();
  BatchResult ra, rb;
  std::atomic<bool> a_returned{false};
  std::thread ta([&] {
    TestFrame f(64, 48, 4);
    ra = a->infer(f.view);
    a_returned = true;
  });
  std::thread tb([&] {
    TestFrame f(64, 48, 5);
    rb = b->infer(f.view);
  });
  // Flush A once both frames wait.
  while (inst->stats().waiting < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  a->set_flushing(true);
  ta.join();
  EXPECT_TRUE(a_returned);
  EXPECT_EQ(inst->stats().waiting, 1) << "B's frame still waits";
  EXPECT_EQ(ra.status, BatchResult::Status::Flushing);
  TestFrame f(64, 48, 6);
  EXPECT_EQ(a->infer(f.view).status, BatchResult::Status::Flushing) << "refused while flushing";
  tb.join();
  EXPECT_EQ(rb.status, BatchResult::Status::Done);
  EXPECT_EQ(rb.batch_size, 1);
  a->set_flushing(false);
  EXPECT_EQ(a->infer(f.view).status, BatchResult::Status::Done);
}

TEST(ModelInstance, StreamsMayPreprocessDifferentlyButNotBreakTheModel) {
  auto inst = ModelInstance::acquire("prep-test", narrow_spec(), {});
  FramePreprocessOptions p = inst->model().preprocess;
  p.resize = ResizeMode::Fixed;
  p.width = 32;
  p.height = 32;
  auto s = inst->open_stream(p);
  TestFrame f(64, 48, 7);
  const BatchResult r = s->infer(f.view);
  ASSERT_EQ(r.status, BatchResult::Status::Done);
  EXPECT_EQ(r.info.resized_width, 32);
  p.pixel_std = {0, 1, 1};
  EXPECT_THROW(inst->open_stream(p), Error);
}

}  // namespace
}  // namespace backbone

namespace backbone {
namespace {

// Every CPU engine of this build runs a batch: each row equals the frame run alone. The oneDNN
// engine with direct convolutions plans a second batch size on the weights it packed for the first;
// with conv-algorithm auto, oneDNN may pick another Winograd kernel (another weight layout) for a
// batch size, which packs those layers' weights again.
TEST(EngineBatch, EveryCpuEngineRunsABatchAsItsFramesAlone) {
  std::vector<std::pair<std::string, ConvAlgorithm>> runs;
  for (const std::string& engine : available_engines()) {
    if (engine == "cuda") continue;
    runs.emplace_back(engine, ConvAlgorithm::Auto);
    if (engine == "onednn") runs.emplace_back(engine, ConvAlgorithm::Direct);
  }
  for (const auto& [engine, algorithm] : runs) {
    SCOPED_TRACE(engine + " " + conv_algorithm_name(algorithm));
    ModelSpec spec = narrow_spec();
    spec.engine = engine;
    spec.device = "cpu";
    spec.conv_algorithm = algorithm;
    Model m = load_model(spec);
    constexpr int64_t kN = 3;
    Tensor batch = Tensor::empty({kN, 3, 64, 96});
    float* p = batch.data_ptr<float>();
    for (int64_t i = 0; i < batch.numel(); ++i) p[i] = static_cast<float>((i * 37) % 101) - 50.f;
    const FeatureMaps all = m.engine->forward(batch);
    const std::string one_shape = m.engine->describe();
    const int64_t one = batch.numel() / kN;
    for (int64_t n = 0; n < kN; ++n) {
      Tensor single = Tensor::empty({1, 3, 64, 96});
      std::copy(p + n * one, p + (n + 1) * one, single.data_ptr<float>());
      const FeatureMaps alone = m.engine->forward(single);
      ASSERT_EQ(alone.size(), all.size());
      for (size_t l = 0; l < all.size(); ++l) {
        const Tensor& b = all[l].second;
        ASSERT_EQ(b.size(0), kN);
        const Tensor c = b.contiguous();
        Shape shape = c.shape();
        shape[0] = 1;
        const int64_t per = c.numel() / kN;
        Tensor row = Tensor::empty(shape);
        std::copy(c.data_ptr<float>() + n * per, c.data_ptr<float>() + (n + 1) * per, row.data_ptr<float>());
        EXPECT_LT(max_rel_diff(row, alone[l].second), 1e-5) << all[l].first << " row " << n;
      }
    }
    if (engine == "onednn" && algorithm == ConvAlgorithm::Direct) {
      // Two shapes planned (batch 3 and batch 1), one set of packed weights.
      const std::string two_shapes = m.engine->describe();
      EXPECT_NE(one_shape.find("1 input shape planned"), std::string::npos) << one_shape;
      EXPECT_NE(two_shapes.find("2 input shapes planned"), std::string::npos) << two_shapes;
      auto mib = [](const std::string& d) {
        const size_t at = d.find(" KiB of packed weights");
        const size_t from = d.rfind(' ', at - 1) + 1;
        return d.substr(from, at - from);
      };
      EXPECT_EQ(mib(one_shape), mib(two_shapes)) << one_shape << "\n" << two_shapes;
      EXPECT_GT(std::stol(mib(one_shape)), 0) << one_shape;
    }
  }
}

}  // namespace
}  // namespace backbone
