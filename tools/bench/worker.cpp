// SPDX-License-Identifier: Apache-2.0
#include "worker.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "bench_core.h"

#ifdef BACKBONE_BENCH_HAVE_OPENCV_DNN
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/dnn.hpp>
#endif

namespace fs = std::filesystem;

namespace backbone::bench {

bool parse_ours_runner(const std::string& runner, std::string& engine, std::string& precision, bool* winograd) {
  if (runner.rfind("ours-", 0) != 0) return false;
  engine = runner.substr(5);
  precision = "fp32";
  auto strip = [&](const std::string& suffix) {
    if (engine.size() > suffix.size() && engine.compare(engine.size() - suffix.size(), suffix.size(), suffix) == 0) {
      engine.resize(engine.size() - suffix.size());
      return true;
    }
    return false;
  };
  for (const char* p : {"bf16", "fp16"})
    if (strip(std::string("-") + p)) precision = p;
  const bool wino = strip("-winograd");
  if (winograd) *winograd = wino;
  return !engine.empty();
}

namespace {

// What a worker runs: forward() for timing, outputs() for the agreement check.
struct Job {
  std::string describe;
  std::function<void()> forward;
  std::function<FeatureMaps()> outputs;
};

Job make_ours_job(const WorkerOptions& o, const Tensor& input, const std::string& engine_name,
                  const std::string& precision, bool winograd) {
  Config cfg;
  cfg.merge_from_list(torchvision_config_overrides(model_depth(o.model)));
  ResNet model = build_resnet_backbone(cfg, ShapeSpec{3});
  LoadReport report = load_checkpoint(model, o.weights, /*strict=*/true);
  std::cerr << "backbone-bench worker: " << report.summary() << "\n";
  EngineOptions eo;
  eo.engine = engine_name;
  eo.num_threads = o.threads;
  eo.precision = precision_from_name(precision);
  eo.winograd = winograd;
  std::shared_ptr<Engine> engine = create_engine(model, eo);
  Job job;
  // One frame first: engines that choose kernels per input shape (onednn) name them only then.
  engine->forward(input);
  job.describe = engine->describe();
  job.forward = [engine, input] { FeatureMaps f = engine->forward(input); };
  job.outputs = [engine, input] { return engine->forward(input); };
  return job;
}

#ifdef BACKBONE_BENCH_HAVE_OPENCV_DNN
Job make_opencv_dnn_job(const WorkerOptions& o, const Tensor& input) {
  if (o.onnx.empty()) throw Error("opencv-dnn needs --onnx FILE");
  cv::setNumThreads(o.threads);
  auto net = std::make_shared<cv::dnn::Net>(cv::dnn::readNetFromONNX(o.onnx));
  net->setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net->setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  const std::vector<int> sizes(input.shape().begin(), input.shape().end());
  // The blob wraps the input tensor's memory (kept alive by the lambdas' copies of `input`).
  auto blob = std::make_shared<cv::Mat>(static_cast<int>(sizes.size()), sizes.data(), CV_32F,
                                        const_cast<void*>(input.data()));
  const std::vector<cv::String> names = {"res2", "res3", "res4", "res5"};
  auto outs = std::make_shared<std::vector<cv::Mat>>();
  Job job;
  job.describe = std::string("OpenCV ") + CV_VERSION + " DNN (C++ cv::dnn::readNetFromONNX, DNN_BACKEND_OPENCV, CPU), " +
                 std::to_string(cv::getNumThreads()) + " threads, ONNX export " + fs::path(o.onnx).filename().string();
  job.forward = [net, blob, names, outs, input] {
    net->setInput(*blob);
    net->forward(*outs, names);
  };
  job.outputs = [net, blob, names, outs, input] {
    net->setInput(*blob);
    net->forward(*outs, names);
    FeatureMaps maps;
    for (size_t i = 0; i < names.size(); ++i) {
      const cv::Mat& m = (*outs)[i];
      if (m.type() != CV_32F) throw Error("opencv-dnn: output " + names[i] + " is not float32");
      Shape shape(m.size.p, m.size.p + m.dims);
      Tensor t = Tensor::empty(shape, DType::Float32);
      cv::Mat dst(m.dims, m.size.p, CV_32F, t.data());
      m.copyTo(dst);  // a copy: the net reuses its output buffers on the next forward
      maps.emplace_back(names[i], t);
    }
    return maps;
  };
  return job;
}
#endif

Job make_job(const WorkerOptions& o, const Tensor& input) {
  std::string engine, precision;
  bool winograd = false;
  if (parse_ours_runner(o.runner, engine, precision, &winograd))
    return make_ours_job(o, input, engine, precision, winograd);
  if (o.runner == "opencv-dnn") {
#ifdef BACKBONE_BENCH_HAVE_OPENCV_DNN
    return make_opencv_dnn_job(o, input);
#else
    throw UnsupportedError("opencv-dnn: this backbone-bench was built without OpenCV's dnn module");
#endif
  }
  throw Error("unknown C++ runner '" + o.runner + "' (expected ours-<engine>[-bf16] or opencv-dnn)");
}

}  // namespace

int run_worker(const WorkerOptions& o) {
  FILE* reply = fdopen(o.reply_fd, "w");
  if (!reply) {
    std::cerr << "backbone-bench worker: cannot open reply descriptor " << o.reply_fd << "\n";
    return 1;
  }
  auto say = [&](std::string line) {
    for (char& c : line)
      if (c == '\n') c = ' ';
    std::fprintf(reply, "%s\n", line.c_str());
    std::fflush(reply);
  };
  Job job;
  try {
    Tensor input = load_npy(o.input);
    if (input.dtype() != DType::Float32) input = input.to(DType::Float32);
    input = input.contiguous();
    job = make_job(o, input);
    say("ready " + nlohmann::json{{"describe", job.describe}, {"version", version()}}.dump());
  } catch (const UnsupportedError& e) {
    say(std::string("unsupported ") + e.what());
    return 0;
  } catch (const std::exception& e) {
    say(std::string("error ") + e.what());
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    if (!(in >> cmd)) continue;
    try {
      if (cmd == "check") {
        std::string dir;
        in >> dir;
        FeatureMaps maps = job.outputs();
        for (const auto& [name, t] : maps) {
          Tensor c = t.to(Device::cpu());
          if (c.dtype() != DType::Float32) c = c.to(DType::Float32);
          save_npy((fs::path(dir) / (name + ".npy")).string(), c.contiguous());
        }
        say("ok");
      } else if (cmd == "run") {
        int n = 0;
        in >> n;
        std::ostringstream times;
        times << "times";
        times.precision(4);
        times << std::fixed;
        for (int i = 0; i < n; ++i) {
          const auto t0 = std::chrono::steady_clock::now();
          job.forward();
          times << ' ' << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        }
        say(times.str());
      } else if (cmd == "quit") {
        return 0;
      } else {
        say("error unknown command '" + cmd + "'");
      }
    } catch (const std::exception& e) {
      say(std::string("error ") + e.what());
    }
  }
  return 0;
}

}  // namespace backbone::bench
