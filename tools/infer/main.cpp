// SPDX-License-Identifier: Apache-2.0
// backbone-infer: run detectron2's ResNet backbone (or an FPN on it) on one input and write every
// out feature.
//
//   backbone-infer [--config-file FILE] [--weights FILE] [--out-features LIST] [--input X.npy | --image FILE]
//                  [--max-image-pixels N] [--output-dir DIR] [--device cpu|cuda:N] [--threads N]
//                  [--engine NAME]
//                  [--precision fp32|fp16|bf16|auto] [--conv-algorithm auto|direct|winograd] [--tf32]
//                  [--size-divisibility N] [--seed N]
//                  [KEY VALUE ...]
//
// Writes DIR/<name>.npy (float32, NCHW) per out_feature and DIR/shapes.json, and prints the
// engine's description (kernels, precision, threads). Exit status: 0 on success, 1 on a runtime
// error (an engine that does not run the precision included), 2 on a usage error.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "image_io.h"

namespace fs = std::filesystem;

namespace {

// The engines of the library's table that run precision `p` (or honour an option): "cuda and onednn".
std::string engines_with(bool (*has)(const backbone::EngineInfo&)) {
  std::vector<std::string> names;
  for (const auto& e : backbone::engine_table())
    if (has(e)) names.push_back(e.name);
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return s;
}

bool runs(const backbone::EngineInfo& e, backbone::Precision p) {
  return std::find(e.precisions.begin(), e.precisions.end(), p) != e.precisions.end();
}

std::string usage() {
  using backbone::EngineInfo;
  const std::string bf16 = engines_with([](const EngineInfo& e) { return runs(e, backbone::Precision::BFloat16); });
  const std::string fp16 = engines_with([](const EngineInfo& e) { return runs(e, backbone::Precision::Float16); });
  const std::string winograd = engines_with([](const EngineInfo& e) { return e.winograd; });
  const std::string tf32 = engines_with([](const EngineInfo& e) { return e.allow_tf32; });
  return "usage: backbone-infer [--config-file FILE] [--weights FILE] [--out-features LIST]\n"
         "                      [--input X.npy | --image FILE]\n"
         "                      [--max-image-pixels N] [--output-dir DIR] [--device cpu|cuda:N] [--threads N]\n"
         "                      [--engine NAME]\n"
         "                      [--precision fp32|fp16|bf16|auto] [--conv-algorithm auto|direct|winograd] [--tf32]\n"
         "                      [--size-divisibility N] [--seed N]\n"
         "                      [KEY VALUE ...]\n"
         "\n"
         "Runs detectron2's ResNet backbone, or the FPN on it that the config's MODEL.BACKBONE.NAME names\n"
         "(build_resnet_fpn_backbone, build_retinanet_resnet_fpn_backbone), and writes DIR/<feature>.npy\n"
         "(float32, NCHW) for each out feature: the p-levels of an FPN config (p2..p6, RetinaNet p3..p7),\n"
         "else MODEL.RESNETS.OUT_FEATURES, or --out-features; and DIR/shapes.json (name, shape, stride,\n"
         "channels).\n"
         "\n"
         "  --config-file FILE       detectron2 YAML config (_BASE_ chains allowed); default: detectron2's\n"
         "                           defaults, i.e. an MSRA R-50 with OUT_FEATURES res2..res5\n"
         "  --out-features LIST      comma-separated outputs, in that order: among stem, res2..res5; with an\n"
         "                           FPN config its p-levels and its bottom-up's MODEL.RESNETS.OUT_FEATURES\n"
         "                           (default: every p-level of an FPN config, else MODEL.RESNETS.OUT_FEATURES)\n"
         "  --weights FILE           .pkl (detectron2/Caffe2), .pth/.pt or .safetensors; default:\n"
         "                           MODEL.WEIGHTS when it names a local file (a URL there is an\n"
         "                           error: download the file and pass it here, or override\n"
         "                           MODEL.WEIGHTS \"\" to run without weights); when MODEL.WEIGHTS\n"
         "                           is empty, detectron2's initialisation from --seed (a warning\n"
         "                           says so). An FPN config with ResNet-only (ImageNet) weights: the\n"
         "                           FPN's layers are seeded from --seed, with a warning\n"
         "  --input X.npy            already preprocessed float32 [N, C, H, W] array (zero-padded at the\n"
         "                           bottom/right to the size divisibility, when there is one)\n"
         "  --image FILE             an image, preprocessed as detectron2 does at test time (INPUT.FORMAT,\n"
         "                           ResizeShortestEdge MIN_SIZE_TEST/MAX_SIZE_TEST, PIXEL_MEAN/STD)\n"
         "                           default without --input/--image: a built-in 480x640 test pattern\n"
         "  --max-image-pixels N     refuse an --image whose header says more than N pixels, before\n"
         "                           decoding it (default: 67108864 = 2^26, e.g. 8192x8192)\n"
         "  --output-dir DIR         where to write the results (default: backbone-out)\n"
         "  --device DEV             cpu, cuda or cuda:N (default: cpu); a CUDA device runs engine cuda\n"
         "                           (this project's CUDA/cuDNN engine, in the separately loaded module\n"
         "                           libbackbone-cuda.so); without a usable one the run fails with the reason\n"
         "  --threads N              CPU threads, 0 to 4096 (default: 0 = every core)\n"
         "  --engine NAME            auto, " + backbone::engine_names() + " (default: auto, the first engine\n"
         "                           of this build that runs the device and precision, in that order)\n"
         "  --precision P            fp32, fp16, bf16 or auto (default: fp32); bf16 runs on " + bf16 + ", fp16 on " +
         fp16 + ";\n"
         "                           an engine that does not run P is an error. auto: the engine's fastest\n"
         "                           precision within its documented bound (onednn measures fp32 against bf16\n"
         "                           once per CPU model, thread count and input shape, cached; the others run\n"
         "                           fp32). Outputs are float32 in any case\n"
         "  --conv-algorithm A       auto, direct or winograd (default: auto): float32 3x3 convolutions where\n"
         "                           the engine has Winograd kernels (" + winograd + "); auto runs Winograd per\n"
         "                           layer where measured faster and within 1e-6 of the direct convolution\n"
         "                           (measured once per CPU model and thread count, cached), winograd on\n"
         "                           every such layer (about 1e-6 off), direct never\n"
         "  --winograd               the same as --conv-algorithm winograd\n"
         "  --tf32                   engine " + tf32 + ": let cuDNN use TF32 tensor cores for float32 convolutions\n"
         "                           (PyTorch's default; features about 1e-3 off); other engines ignore it\n"
         "  --size-divisibility N    pad the preprocessed input to a multiple of N, 0 to 4096 (default: 0: no\n"
         "                           padding; with an FPN config the FPN's size_divisibility, 32, as detectron2's\n"
         "                           model pads; N must then be a multiple of it)\n"
         "  --seed N                 seed of the initialisation without weights (default: 0)\n"
         "  KEY VALUE                config overrides, e.g. MODEL.RESNETS.DEPTH 101\n";
}

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string config_file, weights, out_features, input, image, output_dir = "backbone-out", device = "cpu",
      engine = "auto";
  backbone::Precision precision = backbone::Precision::Float32;
  int threads = 0;
  backbone::ConvAlgorithm conv_algorithm = backbone::ConvAlgorithm::Auto;
  bool tf32 = false;
  int64_t size_divisibility = 0;
  int64_t max_image_pixels = infer::kDefaultMaxImagePixels;
  uint64_t seed = 0;
  std::vector<std::string> overrides;
};

int64_t parse_int(const std::string& flag, const std::string& v, int64_t lo,
                  int64_t hi = std::numeric_limits<int64_t>::max()) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || x < lo || x > hi)
    throw UsageError(flag + " expects an integer >= " + std::to_string(lo) +
                     (hi == std::numeric_limits<int64_t>::max() ? std::string() : " and <= " + std::to_string(hi)) +
                     ", got '" + v + "'");
  return x;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << usage();
      std::exit(0);
    }
    if (a == "--version") {
      std::cout << "backbone-infer " << backbone::version() << "\n";
      std::exit(0);
    }
    std::string value;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      auto eq = a.find('=');
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
      auto next = [&]() -> std::string {
        if (has_inline) return value;
        if (i + 1 >= argc) throw UsageError(a + " expects a value");
        return argv[++i];
      };
      if (a == "--config-file") o.config_file = next();
      else if (a == "--weights") o.weights = next();
      else if (a == "--out-features") o.out_features = next();
      else if (a == "--input") o.input = next();
      else if (a == "--image") o.image = next();
      else if (a == "--output-dir") o.output_dir = next();
      else if (a == "--device") o.device = next();
      else if (a == "--engine") o.engine = next();
      else if (a == "--precision") {
        const std::string p = next();
        if (p != "fp32" && p != "fp16" && p != "bf16" && p != "auto")
          throw UsageError("--precision expects fp32, fp16, bf16 or auto, got '" + p + "'");
        o.precision = backbone::precision_from_name(p);
      }
      else if (a == "--conv-algorithm") {
        const std::string c = next();
        if (c != "auto" && c != "direct" && c != "winograd")
          throw UsageError("--conv-algorithm expects auto, direct or winograd, got '" + c + "'");
        o.conv_algorithm = backbone::conv_algorithm_from_name(c);
      }
      else if (a == "--winograd") o.conv_algorithm = backbone::ConvAlgorithm::Winograd;
      else if (a == "--tf32") o.tf32 = true;
      else if (a == "--threads") o.threads = static_cast<int>(parse_int(a, next(), 0, 4096));
      else if (a == "--size-divisibility") o.size_divisibility = parse_int(a, next(), 0, 4096);
      else if (a == "--max-image-pixels") o.max_image_pixels = parse_int(a, next(), 1);
      else if (a == "--seed") o.seed = static_cast<uint64_t>(parse_int(a, next(), 0));
      else throw UsageError("unknown option " + a);
    } else {
      o.overrides.push_back(a);
    }
  }
  if (!o.input.empty() && !o.image.empty()) throw UsageError("give either --input or --image, not both");
  if (o.overrides.size() % 2 != 0)
    throw UsageError("config overrides come in KEY VALUE pairs; '" + o.overrides.back() + "' has no value");
  if (o.output_dir.empty()) throw UsageError("--output-dir must not be empty");
  if (o.engine.empty()) throw UsageError("--engine must not be empty (auto, " + backbone::engine_names() + ")");
  return o;
}

// A deterministic 480x640 BGR test pattern (gradients and a checkerboard) for the built-in demo.
std::vector<uint8_t> test_pattern(int64_t h, int64_t w) {
  std::vector<uint8_t> img(static_cast<size_t>(h * w * 3));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      uint8_t* p = &img[static_cast<size_t>((y * w + x) * 3)];
      const bool check = ((x / 40) + (y / 40)) % 2 == 0;
      p[0] = static_cast<uint8_t>(255 * x / (w - 1));
      p[1] = static_cast<uint8_t>(255 * y / (h - 1));
      p[2] = check ? 220 : 30;
    }
  return img;
}

int run(const Options& o) {
  using namespace backbone;
  if (!o.image.empty()) infer::check_image_size(o.image, o.max_image_pixels);  // before any other work
  const Device device = Device::parse(o.device);
  ModelSpec spec;
  spec.config_file = o.config_file;
  spec.config_overrides = o.overrides;
  spec.out_features = split_out_features(o.out_features);
  spec.weights = o.weights;
  spec.seed = o.seed;
  spec.engine = o.engine;
  spec.device = device.str();
  spec.precision = o.precision;
  spec.num_threads = o.threads;
  spec.conv_algorithm = o.conv_algorithm;
  spec.allow_tf32 = o.tf32;
  spec.preprocess.size_divisibility = o.size_divisibility;  // checked against an FPN's by load_model
  Model model;
  try {
    model = load_model(spec);
  } catch (const ModelError& e) {
    if (e.step() != ModelStep::EngineSettings && e.step() != ModelStep::EngineDevice) throw;
    throw Error("engine '" + o.engine + "' at precision " + precision_name(o.precision) + " on " + device.str() + ": " +
                e.cause());
  }
  if (model.load_report) std::cerr << "backbone-infer: loaded " << model.weights << ": " << *model.load_report << "\n";
  for (const auto& w : model.warnings) std::cerr << "backbone-infer: warning: " << w.message << "\n";

  Tensor input;
  std::string source;
  if (!o.input.empty()) {
    input = load_npy(o.input);
    if (input.dtype() != DType::Float32) input = input.to(DType::Float32);
    source = o.input;
    // Zero padding as ImageList.from_tensors pads (an FPN's top-down levels need it).
    const int64_t div = model.preprocess.size_divisibility;
    if (div > 1 && input.dim() == 4 && (input.size(2) % div != 0 || input.size(3) % div != 0)) {
      const std::vector<double> zero(static_cast<size_t>(input.size(1)), 0.0), one(zero.size(), 1.0);
      const Shape before = input.shape();
      input = normalize_and_pad(input, zero, one, div);
      source += " (" + shape_str(before) + ", zero-padded to a multiple of " + std::to_string(div) + ")";
    }
  } else {
    PreprocessOptions p = PreprocessOptions::from_config(model.config);
    p.size_divisibility = model.preprocess.size_divisibility;  // --size-divisibility, or an FPN's
    std::vector<uint8_t> pixels;
    ImageView view;
    if (!o.image.empty()) {
#ifdef BACKBONE_INFER_HAVE_OPENCV
      infer::BgrImage decoded = infer::read_image_bgr(o.image, o.max_image_pixels);
      pixels = std::move(decoded.pixels);
      view.width = decoded.width;
      view.height = decoded.height;
#else
      throw Error("--image needs OpenCV's imgcodecs, which this build lacks; pass a preprocessed --input X.npy");
#endif
      source = o.image;
    } else {
      view.height = 480;
      view.width = 640;
      pixels = test_pattern(view.height, view.width);
      source = "built-in 480x640 test pattern";
    }
    view.data = pixels.data();
    view.channels = 3;
    view.row_stride = view.width * 3;
    view.format = "BGR";
    input = preprocess(view, p).tensor;
  }

  Engine* engine = model.engine.get();
  const auto t0 = std::chrono::steady_clock::now();
  FeatureMaps features = engine->forward(input);
  // A CUDA engine returns its outputs before they are computed: the time is that of finished ones.
  for (const auto& level : features) cuda_wait_ready(level.second);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // After the run: engines that choose kernels per input shape (oneDNN) name them now.
  const std::string description = engine->describe();

  fs::create_directories(o.output_dir);
  nlohmann::json shapes = nlohmann::json::array();
  for (const auto& [name, t] : features) {
    save_npy((fs::path(o.output_dir) / (name + ".npy")).string(), t.to(Device::cpu()).contiguous());
    nlohmann::json e;
    e["name"] = name;
    e["shape"] = t.shape();
    for (const auto& [n, s] : model.output_shape)
      if (n == name) {
        e["stride"] = s.stride.value_or(0);
        e["channels"] = s.channels.value_or(0);
      }
    shapes.push_back(e);
  }
  std::ofstream(fs::path(o.output_dir) / "shapes.json") << shapes.dump(2) << "\n";

  std::cout << "input " << shape_str(input.shape()) << " from " << source << "\n";
  for (const auto& e : shapes)
    std::cout << "  " << e["name"].get<std::string>() << ": shape " << e["shape"].dump() << ", stride "
              << e["stride"] << "\n";
  std::cout << "engine: " << description << "\n";
  std::cout << "forward: " << ms << " ms (first run); wrote " << o.output_dir << "/\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "backbone-infer: " << e.what() << "\n\n" << usage();
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "backbone-infer: error: " << e.what() << "\n";
    return 1;
  }
}
