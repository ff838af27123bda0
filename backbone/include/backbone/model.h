// SPDX-License-Identifier: Apache-2.0
// A ready-to-run model from a description, in one call: the policy that the resnetbackbone element,
// backbone-infer, backbone-extract (through the element) and the benchmarks share.
//
// load_model(spec) does, in order (each step's failure is a ModelError naming the step):
//   1. config: detectron2's defaults, then spec.config_file (may be empty), then
//      spec.default_out_features when there is no config file, then spec.config_overrides
//      (merge_from_list pairs), then spec.out_features;
//   2. build: as MODEL.BACKBONE.NAME says: build_resnet_backbone, or build_resnet_fpn_backbone /
//      build_retinanet_resnet_fpn_backbone (an FPN on the ResNet: spec.out_features then choose among
//      its p-levels and its bottom-up's outputs, default every p-level); with spec.feature_maps_only
//      the "linear" output is refused;
//   3. weights: spec.weights, else the config's MODEL.WEIGHTS, else detectron2's seeded
//      initialisation from spec.seed (a ModelWarning, never printed: the caller reports it);
//   4. engine: spec.engine ("auto" or a name of engine_table()) on spec.device ("auto", "cpu",
//      "cuda", "cuda:N") at spec.precision. device "auto" is the named engine's kind of device
//      (cuda:0 for cuda, else the CPU); with engine "auto", cuda:0 where CUDA is available, else
//      the CPU, and where CUDA is there but no engine of this build runs on it, the CPU (a
//      ModelWarning saying why);
//   5. preprocessing: the config's INPUT.FORMAT, MODEL.PIXEL_MEAN/STD, INPUT.MIN/MAX_SIZE_TEST,
//      then spec.preprocess's overrides, checked. An FPN pads to its size_divisibility (32 for res5)
//      where spec.preprocess.size_divisibility is 0, and refuses one that is not a multiple of it.
//   With an FPN, weights without its own layers (an ImageNet ResNet checkpoint) load the bottom-up
//   and seed the FPN's layers from spec.seed (ModelWarning SeededFpnWeights).
//
// How the element calls it, in start() (outside the object lock; the call loads weights and builds
// the engine):
//
//   backbone::ModelSpec spec;
//   spec.config_file = s.config_file;
//   spec.out_features = backbone::split_out_features(s.out_features);  // checked by load_model
//   spec.default_out_features = {"res2", "res3", "res4", "res5"};    // without config-file
//   spec.feature_maps_only = true;
//   spec.weights = s.weights;                  // seed 0 (the default) without weights
//   spec.engine = s.engine;  spec.device = s.device;  spec.precision = ...;
//   spec.num_threads = s.num_threads;  spec.conv_algorithm = s.conv_algorithm;  spec.allow_tf32 = s.allow_tf32;
//   spec.preprocess = {input_format ("" for "config"), pixel_mean, pixel_std, resize, min_size,
//                      max_size, width, height, size_divisibility};
//   try {
//     backbone::Model m = backbone::load_model(spec);
//     // m.engine, m.preprocess, m.output_shape (stride per level), m.name, m.description,
//     // m.load_report (GST_INFO), m.warnings: SeededWeights -> GST_ELEMENT_WARNING (RESOURCE,
//     // SETTINGS), DeviceFallback -> GST_INFO.
//   } catch (const backbone::ModelError& e) {
//     // GST_ELEMENT_ERROR (RESOURCE, code, ("%s", e.what ())) with code by e.step():
//     //   ConfigFile, WeightsFile -> NOT_FOUND; Weights -> READ; EngineDevice -> FAILED;
//     //   Config, Build, EngineSettings, Preprocess -> SETTINGS.
//   }
//
// The engine property's values and its documentation come from engine_table()
// (backbone/engine_table.h); a device name is checked with Device::parse (plus "auto"). The meta's
// padded size, where the engine leaves PreprocessResult::tensor undefined, is
// padded_size(resized, m.preprocess.size_divisibility).
//
// Tools that format their own messages use cause() (the underlying error's text, without the
// step's context): backbone-infer prints engine failures as "engine 'E' at precision P on D: cause".
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backbone/config.h"
#include "backbone/engine.h"
#include "backbone/error.h"
#include "backbone/frame.h"
#include "backbone/shape_spec.h"

namespace backbone {

// Overrides of the preprocessing that the config describes. Empty / 0 / None keep the config's.
struct PreprocessOverrides {
  std::string input_format;                  // "", "BGR" or "RGB" (the order the model wants)
  std::vector<double> pixel_mean;            // empty: MODEL.PIXEL_MEAN; else 3 values
  std::vector<double> pixel_std;             // empty: MODEL.PIXEL_STD; else 3 non-zero finite values
  ResizeMode resize = ResizeMode::None;      // None: the frame size (the config has no resize mode)
  int64_t min_size = 0, max_size = 0;        // ShortestEdge; 0: INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST
  int64_t width = 0, height = 0;             // Fixed: both > 0
  int64_t size_divisibility = 0;             // zero padding to a multiple (0 or 1: none)
};

struct ModelSpec {
  std::string config_file;                   // detectron2 YAML; "": detectron2's defaults
  std::vector<std::string> config_overrides; // merge_from_list pairs, e.g. {"MODEL.RESNETS.DEPTH", "101"}
  // among stem, res2 .. res5, e.g. {"res2", "res5"}; with an FPN config its p-levels ("p2" .. "p6",
  // RetinaNet "p3" .. "p7") and its bottom-up's outputs; empty: the config's (an FPN: every p-level)
  std::vector<std::string> out_features;
  // Out features when there is no config file and out_features is empty (the element: res2..res5;
  // empty: detectron2's default, res4). config_overrides still override them.
  std::vector<std::string> default_out_features;
  // Refuse a "linear" (classifier) output: N,C,H,W maps only. (build_resnet_backbone builds no
  // classifier, as detectron2's; this guards consumers of maps against a future one.)
  bool feature_maps_only = false;
  std::string weights;                       // checkpoint; "": MODEL.WEIGHTS, else seeded initialisation
  uint64_t seed = 0;                         // seed of detectron2's initialisation without weights
  std::string engine = "auto";               // "auto" or a name of engine_table()
  std::string device = "auto";               // "auto", "cpu", "cuda" or "cuda:N"
  Precision precision = Precision::Float32;
  int num_threads = 0;                       // 0: every core
  ConvAlgorithm conv_algorithm = ConvAlgorithm::Auto;  // EngineOptions::conv_algorithm
  bool allow_tf32 = false;                   // EngineOptions::allow_tf32
  PreprocessOverrides preprocess;
};

struct ModelWarning {
  enum class Kind {
    SeededWeights,   // no weights: the features are not those of a trained model
    DeviceFallback,  // engine and device "auto": CUDA is there but no engine ran on it; the CPU runs the model
    SeededFpnWeights,  // the checkpoint lacks the FPN's own layers (an ImageNet ResNet): they are seeded
  };
  Kind kind;
  std::string message;
};

struct Model {
  std::unique_ptr<Engine> engine;            // ready: engine->forward / forward_frame
  Config config;                             // the merged config
  std::vector<std::pair<std::string, ShapeSpec>> output_shape;  // channels and stride per out feature
  FramePreprocessOptions preprocess;         // checked (preprocess_frame accepts them)
  // The backbone's own size_divisibility (an FPN's: 32 for res5; 0 for a ResNet): preprocess pads to
  // a multiple of it.
  int64_t backbone_size_divisibility = 0;
  std::string name;                          // model_name(config): "R-50", "X-101-32x8d", "R-50-DC5"
  std::string description;                   // engine->describe() after loading
  std::string weights;                       // the checkpoint loaded; "" when seeded
  std::optional<std::string> load_report;    // LoadReport::summary() of the checkpoint; none when seeded
  std::vector<ModelWarning> warnings;
};

// The step of load_model() that failed.
enum class ModelStep {
  ConfigFile,      // the config file does not exist or is not a regular file
  Config,          // the config (file, overrides, out features) is invalid
  Build,           // the backbone cannot be built from the config, or its outputs do not fit
  WeightsFile,     // the weights file does not exist (or MODEL.WEIGHTS is a URL)
  Weights,         // the weights cannot be read or do not fit the model
  EngineSettings,  // unknown or not-built engine, invalid device, a precision the engine does not run
  EngineDevice,    // the engine cannot run on the device (unavailable CUDA; none runs there)
  Preprocess,      // invalid preprocessing (input format, pixel mean/std, resize, size divisibility)
};
const char* model_step_name(ModelStep step);  // "config-file", "config", "build", "weights-file", ...

// A failure of load_model(): what() is the full message (e.g. "config-file \"x.yaml\": not valid
// YAML ...", "engine \"cuda\" on cuda:0 cannot run: ... (the engines of this build that run here:
// onednn, libtorch, opencv)"), cause() the underlying error's text alone.
class ModelError : public Error {
 public:
  ModelError(ModelStep step, const std::string& message, std::string cause)
      : Error(message), step_(step), cause_(std::move(cause)) {}
  ModelStep step() const { return step_; }
  const std::string& cause() const { return cause_; }

 private:
  ModelStep step_;
  std::string cause_;
};

// One class per kind of step, for callers that catch by type.
class ModelConfigError : public ModelError {  // ConfigFile, Config
 public:
  using ModelError::ModelError;
};
class ModelBuildError : public ModelError {  // Build
 public:
  using ModelError::ModelError;
};
class WeightsError : public ModelError {  // WeightsFile, Weights
 public:
  using ModelError::ModelError;
};
class EngineSettingsError : public ModelError {  // EngineSettings
 public:
  using ModelError::ModelError;
};
class EngineDeviceError : public ModelError {  // EngineDevice
 public:
  using ModelError::ModelError;
};
class PreprocessSettingsError : public ModelError {  // Preprocess
 public:
  using ModelError::ModelError;
};

// Assembles the model (see the top of this file). Throws a ModelError subclass.
Model load_model(const ModelSpec& spec);

// Step 5 alone: the preprocessing `spec` asks for on the loaded `model` (its config and backbone),
// e.g. for another user of a shared model whose resize settings differ. PreprocessSettingsError.
FramePreprocessOptions model_preprocess(const ModelSpec& spec, const Model& model);

// The device load_model() runs `engine` on first, for a device name: "cpu", "cuda", "cuda:N" as
// Device::parse reads them; "auto" (or "") the named engine's kind of device (cuda:0 for a CUDA
// engine, else the CPU), for engine "auto" cuda:0 where CUDA is available, else the CPU. (With
// engine "auto", device "auto" falls back to the CPU where no engine runs on cuda:0.) Throws
// Error for an invalid device name. For the element's caps before start(): whether it may offer
// CUDA memory.
Device resolve_device(const std::string& engine, const std::string& device);

// "res2, res3" -> {"res2", "res3"}: split at each comma, entries trimmed, "" -> {}. Never throws:
// load_model() checks the names (an empty entry or one other than stem, res2 .. res5 is a
// ModelConfigError), so a property's text can go through unchecked.
std::vector<std::string> split_out_features(const std::string& comma_separated);

// detectron2's naming of its ImageNet backbones from MODEL.RESNETS: "R-50", "X-101-32x8d", with
// "-DC5" for RES5_DILATION 2; "R-50-FPN" (build_resnet_fpn_backbone), "RetinaNet-R-50-FPN".
std::string model_name(const Config& cfg);

// ImageList.from_tensors: a resized height or width padded up to a multiple of size_divisibility
// (0 or 1: unchanged), the size of the tensor the backbone sees.
int64_t padded_size(int64_t size, int64_t size_divisibility);

}  // namespace backbone
