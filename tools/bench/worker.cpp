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

namespace {

// What a worker runs: forward() for timing, outputs() for the agreement check.
struct Job {
  std::string describe;
  std::function<void()> forward;
  std::function<FeatureMaps()> outputs;
};

// Blocks until every level is computed: a CUDA engine returns its outputs before they are ready
// (no-op for CPU tensors).
void wait_ready(const FeatureMaps& maps) {
  for (const auto& level : maps) cuda_wait_ready(level.second);
}

// Our engine for runner `r`. The plain network is assembled by backbone::load_model, as the element
// and the tools assemble theirs; the deformable one keeps bench_model, whose offset convolutions
// are drawn from the seed after a non-strict load (load_model loads strictly or seeds everything).
std::shared_ptr<Engine> make_our_engine(const WorkerOptions& o, const OursRunner& r) {
  if (!o.deform) {
    ModelSpec spec;
    spec.config_overrides = bench_config_overrides(o.model);  // an FPN model: detectron2's FPN on it
    spec.weights = o.weights;
    spec.seed = o.seed;
    spec.engine = r.engine;
    spec.device = Device::parse(o.device).str();
    spec.num_threads = o.threads;
    spec.precision = precision_from_name(r.precision);
    spec.conv_algorithm = conv_algorithm_from_name(r.conv_algorithm);
    spec.allow_tf32 = r.tf32;
    Model m = load_model(spec);
    std::cerr << "backbone-bench worker: "
              << (m.load_report ? *m.load_report : "seeded initialisation (seed " + std::to_string(o.seed) + ")") << "\n";
    return std::move(m.engine);
  }
  std::string summary;
  ResNet model = bench_model(model_depth(o.model), o.deform, o.weights, o.seed, &summary);
  std::cerr << "backbone-bench worker: " << summary << "\n";
  EngineOptions eo;
  eo.engine = r.engine;
  eo.device = Device::parse(o.device);
  eo.num_threads = o.threads;
  eo.precision = precision_from_name(r.precision);
  eo.conv_algorithm = conv_algorithm_from_name(r.conv_algorithm);
  eo.allow_tf32 = r.tf32;
  return create_engine(model, eo);
}

Job make_ours_job(const WorkerOptions& o, const Tensor& host_input, const OursRunner& r) {
  std::shared_ptr<Engine> engine = make_our_engine(o, r);
  // The input where the engine runs, once, outside the timing (as the PyTorch peers hold theirs).
  const Tensor input = host_input.to(engine->device());
  Job job;
  std::string input_note;
  if (o.nv12) {
    if (input.dim() != 2 || input.dtype() != DType::UInt8 || input.size(0) % 3 != 0)
      throw Error("--nv12 expects a uint8 [H * 3 / 2, W] frame, got " + std::string(dtype_name(input.dtype())) + " " +
                  shape_str(input.shape()));
    const int64_t h = input.size(0) * 2 / 3, w = input.size(1);
    const FrameView frame = nv12_frame_view(static_cast<const uint8_t*>(input.data()), h, w, input.device());
    const FramePreprocessOptions pre = nv12_preprocess_options();
    // `input` is captured: it owns the frame's memory.
    job.forward = [engine, input, frame, pre] { wait_ready(engine->forward_frame(frame, pre)); };
    job.outputs = [engine, input, frame, pre] { return engine->forward_frame(frame, pre); };
    input_note = "NV12 " + std::to_string(w) + "x" + std::to_string(h) + " frame in " +
                 (input.device().is_cpu() ? std::string("host") : input.device().str()) +
                 " memory -> forward_frame (ShortestEdge 800/1333)";
  } else {
    job.forward = [engine, input] { wait_ready(engine->forward(input)); };
    job.outputs = [engine, input] { return engine->forward(input); };
    input_note = "input " + shape_str(input.shape()) + " float32 on " + input.device().str();
  }
  // One frame first: engines that choose kernels per input shape (onednn, cuda) name them only then.
  job.forward();
  job.describe = engine->describe() + "; " + input_note + (o.deform ? "; deformable res3-res5" : "");
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
  const std::vector<cv::String> names = is_fpn_model(o.model) ? std::vector<cv::String>{"p2", "p3", "p4", "p5", "p6"}
                                                              : std::vector<cv::String>{"res2", "res3", "res4", "res5"};
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
  OursRunner ours;
  if (parse_ours_runner(o.runner, ours)) return make_ours_job(o, input, ours);
  if (o.deform || o.nv12) throw Error(o.runner + " runs neither the deformable R-50 nor NV12 frames");
  if (o.runner == "opencv-dnn") {
#ifdef BACKBONE_BENCH_HAVE_OPENCV_DNN
    return make_opencv_dnn_job(o, input);
#else
    throw UnsupportedError("opencv-dnn: this backbone-bench was built without OpenCV's dnn module");
#endif
  }
  throw Error("unknown C++ runner '" + o.runner + "' (expected ours-<engine>[-direct|-winograd|-tf32][-fp32|-fp16|-bf16|-auto] or opencv-dnn)");
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
    if (!o.nv12 && input.dtype() != DType::Float32) input = input.to(DType::Float32);
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
