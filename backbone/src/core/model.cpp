// SPDX-License-Identifier: Apache-2.0
#include "backbone/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include "backbone/checkpoint.h"
#include "backbone/engine_table.h"
#include "backbone/fpn.h"
#include "backbone/preprocess.h"
#include "backbone/resnet.h"
#include "frame/frame_internal.h"
#include "preprocess/checks.h"

namespace backbone {

namespace {

const char* const kFeatureMapNames[] = {"stem", "res2", "res3", "res4", "res5"};

bool is_feature_map_name(const std::string& name) {
  for (const char* n : kFeatureMapNames)
    if (name == n) return true;
  return false;
}

// {"res2", "res3"} -> "['res2', 'res3']" for merge_from_list.
std::string list_literal(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", '" : "'") + names[i] + "'";
  return out + "]";
}

// "[res2, res7]" for messages.
std::string list_text(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out + "]";
}

// Each name a feature map of the backbone (build_resnet_backbone has no classifier output).
void check_out_features(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (n.empty()) throw ConfigError("an out feature is empty");
    if (!is_feature_map_name(n)) {
      // A pyramid level asked of a plain ResNet: say where p-levels come from.
      const bool p_level = n.size() == 2 && n[0] == 'p' && n[1] >= '2' && n[1] <= '7';
      throw ConfigError("unknown out feature \"" + n + "\" (expected stem, res2, res3, res4 or res5" +
                        (p_level ? std::string("; p-levels are the outputs of an FPN config, whose MODEL.BACKBONE.NAME is "
                                               "build_resnet_fpn_backbone or build_retinanet_resnet_fpn_backbone)")
                                 : std::string(")")));
    }
  }
}

bool is_fpn_config(const Config& cfg) {
  return cfg.has("MODEL.BACKBONE.NAME") && is_fpn_backbone_name(cfg.get_string("MODEL.BACKBONE.NAME"));
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

Config assemble_config(const ModelSpec& spec) {
  Config cfg;
  if (!spec.config_file.empty()) {
    if (!is_regular_file(spec.config_file)) {
      const std::string m = "config-file \"" + spec.config_file + "\" does not exist or is not a regular file";
      throw ModelConfigError(ModelStep::ConfigFile, m, m);
    }
    try {
      cfg.merge_from_file(spec.config_file);
    } catch (const std::exception& e) {
      throw ModelConfigError(ModelStep::Config, "config-file \"" + spec.config_file + "\": " + e.what(), e.what());
    }
  } else if (!spec.default_out_features.empty()) {
    try {
      check_out_features(spec.default_out_features);
      cfg.merge_from_list({"MODEL.RESNETS.OUT_FEATURES", list_literal(spec.default_out_features)});
    } catch (const std::exception& e) {
      throw ModelConfigError(ModelStep::Config,
                             "default out features " + list_text(spec.default_out_features) + ": " + e.what(), e.what());
    }
  }
  if (!spec.config_overrides.empty()) {
    try {
      cfg.merge_from_list(spec.config_overrides);
    } catch (const std::exception& e) {
      throw ModelConfigError(ModelStep::Config, std::string("config overrides: ") + e.what(), e.what());
    }
  }
  // An FPN's out features (its p-levels, or outputs of its bottom-up) are chosen on the built FPN;
  // MODEL.RESNETS.OUT_FEATURES stays the bottom-up's.
  if (!spec.out_features.empty() && !is_fpn_config(cfg)) {
    try {
      check_out_features(spec.out_features);
      cfg.merge_from_list({"MODEL.RESNETS.OUT_FEATURES", list_literal(spec.out_features)});
    } catch (const std::exception& e) {
      throw ModelConfigError(ModelStep::Config, "out features " + list_text(spec.out_features) + ": " + e.what(),
                             e.what());
    }
  }
  return cfg;
}

std::string join_names(const std::vector<std::string>& names, size_t most = 6) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < most; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > most) s += ", ... (" + std::to_string(names.size() - most) + " more)";
  return s;
}

// An FPN's own layers missing from the checkpoint keep detectron2's initialisation from spec.seed.
void seed_missing(const ModelSpec&, ResNet&, Model&, const LoadReport&) {}
void seed_missing(const ModelSpec& spec, FPN&, Model& m, const LoadReport& report) {
  std::vector<std::string> fpn_missing;
  for (const auto& n : report.missing)
    if (FPN::is_fpn_entry(n)) fpn_missing.push_back(n);
  if (fpn_missing.empty()) return;
  m.warnings.push_back({ModelWarning::Kind::SeededFpnWeights,
                        "weights \"" + report.path + "\" have no weights for " + std::to_string(fpn_missing.size()) +
                            " entries of the FPN (" + join_names(fpn_missing) +
                            "; an ImageNet ResNet checkpoint has none): they use detectron2's c2_xavier_fill "
                            "initialisation with seed " + std::to_string(spec.seed) +
                            ", so the p-levels are not those of a trained model"});
}
void seed_fpn(ResNet&, uint64_t) {}
void seed_fpn(FPN& fpn, uint64_t seed) { fpn.init_fpn_weights(seed); }

// Loads spec.weights, else MODEL.WEIGHTS, else seeds; fills the model's weights fields.
template <typename Net>
void load_weights(const ModelSpec& spec, Net& net, Model& m) {
  std::string weights = spec.weights;
  const bool from_config = weights.empty();
  if (from_config) weights = m.config.get_string("MODEL.WEIGHTS");
  if (weights.empty()) {
    net.init_weights(spec.seed);
    m.warnings.push_back({ModelWarning::Kind::SeededWeights,
                          "no weights given: the backbone uses detectron2's initialisation with seed " +
                              std::to_string(spec.seed) +
                              ", so its features are not those of a trained model (give a checkpoint, or "
                              "MODEL.WEIGHTS in the config)"});
    return;
  }
  const std::string origin = from_config ? " (from the config's MODEL.WEIGHTS)" : "";
  if (weights.find("://") != std::string::npos) {
    const std::string msg = "weights \"" + weights + "\"" + origin +
                            " is a URL: this library does not download; download the file and give its path (or "
                            "set MODEL.WEIGHTS to \"\" for detectron2's seeded initialisation)";
    throw WeightsError(ModelStep::WeightsFile, msg, msg);
  }
  if (!is_regular_file(weights)) {
    const std::string msg = "weights \"" + weights + "\" does not exist or is not a regular file" + origin;
    throw WeightsError(ModelStep::WeightsFile, msg, msg);
  }
  seed_fpn(net, spec.seed);
  try {
    const LoadReport report = load_checkpoint(net, weights, /*strict=*/true);
    m.load_report = report.summary();
    seed_missing(spec, net, m, report);
  } catch (const std::exception& e) {
    throw WeightsError(ModelStep::Weights, "weights \"" + weights + "\": " + e.what(), e.what());
  }
  m.weights = weights;
}

std::string built_engine_list() {
  std::string list;
  for (const auto& n : available_engines()) list += (list.empty() ? "" : ", ") + n;
  return list.empty() ? std::string("none") : list;
}

template <typename Net>
void create_model_engine(const ModelSpec& spec, const Net& net, Model& m) {
  const bool auto_device = spec.device == "auto" || spec.device.empty();
  EngineOptions o;
  o.engine = spec.engine;
  o.num_threads = spec.num_threads;
  o.precision = spec.precision;
  o.conv_algorithm = spec.conv_algorithm;
  o.allow_tf32 = spec.allow_tf32;
  const EngineInfo* requested = find_engine(spec.engine);
  try {
    o.device = resolve_device(spec.engine, spec.device);
  } catch (const std::exception& e) {
    throw EngineSettingsError(ModelStep::EngineSettings, std::string("device: ") + e.what(), e.what());
  }
  if (spec.num_threads < 0) {
    const std::string msg = "num-threads must be 0 (every core) or positive, found " + std::to_string(spec.num_threads);
    throw EngineSettingsError(ModelStep::EngineSettings, msg, msg);
  }
  // A CUDA engine (cuda) named for a CUDA device (or auto) where the CUDA module cannot run it: say
  // why. (On the CPU, the engine itself says that it runs on CUDA devices only.)
  const std::vector<std::string> runnable = available_engines();
  if (requested && requested->built && requested->cuda_device && !o.device.is_cpu() &&
      std::find(runnable.begin(), runnable.end(), spec.engine) == runnable.end()) {
    std::string why = "the CUDA module sees no device";
    try {
      cuda_device_info(o.device.index);
    } catch (const std::exception& e) {
      why = e.what();
    }
    throw EngineDeviceError(ModelStep::EngineDevice,
                            "engine \"" + spec.engine + "\" on " + (auto_device ? std::string("auto") : o.device.str()) +
                                " cannot run: " + why + " (the engines of this build that run here: " +
                                built_engine_list() + ")",
                            why);
  }
  // "engine "libtorch", precision bf16, on cpu: "
  auto context = [&spec, &o]() {
    return "engine \"" + spec.engine + "\", precision " + precision_name(o.precision) + ", on " + o.device.str() + ": ";
  };
  try {
    try {
      m.engine = create_engine(net, o);
    } catch (const Error& e) {
      // device auto: CUDA is there but no engine of this build runs on it; the CPU then.
      if (!auto_device || spec.engine != "auto" || o.device.is_cpu() ||
          dynamic_cast<const UnsupportedError*>(&e) != nullptr)
        throw;
      m.warnings.push_back({ModelWarning::Kind::DeviceFallback,
                            "device auto: " + std::string(e.what()) + "; using the CPU"});
      o.device = Device::cpu();
      m.engine = create_engine(net, o);
    }
  } catch (const UnsupportedError& e) {
    throw EngineSettingsError(ModelStep::EngineSettings, context() + e.what(), e.what());
  } catch (const std::exception& e) {
    if (spec.engine != "auto") {
      const EngineInfo* info = find_engine(spec.engine);
      const std::string expected = ": expected auto or one of this build's engines (" + built_engine_list() + ")";
      if (!info)
        throw EngineSettingsError(ModelStep::EngineSettings, "unknown engine \"" + spec.engine + "\"" + expected,
                                  e.what());
      if (!info->built)
        throw EngineSettingsError(ModelStep::EngineSettings,
                                  "engine \"" + spec.engine + "\" is not built into this copy of the backbone library" +
                                      expected,
                                  e.what());
    }
    throw EngineDeviceError(ModelStep::EngineDevice, context() + e.what(), e.what());
  }
  try {
    m.description = m.engine->describe();
  } catch (const std::exception& e) {
    throw EngineDeviceError(ModelStep::EngineDevice, context() + "describe(): " + e.what(), e.what());
  }
}

FramePreprocessOptions preprocess_options(const ModelSpec& spec, const Config& cfg, int64_t backbone_divisibility) {
  const PreprocessOverrides& s = spec.preprocess;
  const PreprocessOptions base = PreprocessOptions::from_config(cfg);
  FramePreprocessOptions p;
  p.input_format = base.input_format;
  p.pixel_mean = base.pixel_mean;
  p.pixel_std = base.pixel_std;
  p.min_size = base.min_size_test;
  p.max_size = base.max_size_test;
  if (!s.input_format.empty()) {
    if (s.input_format != "BGR" && s.input_format != "RGB")
      throw ConfigError("input format must be BGR or RGB, found \"" + s.input_format + "\"");
    p.input_format = s.input_format;
  }
  if (!s.pixel_mean.empty()) p.pixel_mean = s.pixel_mean;
  if (!s.pixel_std.empty()) p.pixel_std = s.pixel_std;
  if (p.pixel_mean.size() != 3 || p.pixel_std.size() != 3)
    throw ConfigError("pixel-mean and pixel-std need 3 values each (one per channel), found " +
                      std::to_string(p.pixel_mean.size()) + " and " + std::to_string(p.pixel_std.size()));
  for (double v : p.pixel_std)
    if (v == 0.0 || !std::isfinite(v))
      throw ConfigError("pixel-std values must be non-zero and finite, found " + std::to_string(v));
  for (double v : p.pixel_mean)
    if (!std::isfinite(v)) throw ConfigError("pixel-mean values must be finite, found " + std::to_string(v));
  p.resize = s.resize;
  switch (s.resize) {
    case ResizeMode::ShortestEdge:
      if (s.min_size > 0) p.min_size = s.min_size;
      if (s.max_size > 0) p.max_size = s.max_size;
      if (p.min_size <= 0 || p.max_size <= 0)
        throw ConfigError("resize=shortest-edge needs min-size and max-size > 0 (here or as INPUT.MIN_SIZE_TEST / "
                          "INPUT.MAX_SIZE_TEST), found " +
                          std::to_string(p.min_size) + " and " + std::to_string(p.max_size));
      break;
    case ResizeMode::Fixed:
      if (s.width <= 0 || s.height <= 0)
        throw ConfigError("resize=fixed needs width and height > 0, found " + std::to_string(s.width) + "x" +
                          std::to_string(s.height));
      p.width = s.width;
      p.height = s.height;
      break;
    case ResizeMode::None:
      break;
  }
  if (s.size_divisibility < 0)
    throw ConfigError("size-divisibility must be >= 0, found " + std::to_string(s.size_divisibility));
  p.size_divisibility = s.size_divisibility;
  // The backbone's size_divisibility (an FPN's: the stride of its last in-feature) where the caller
  // set none, as detectron2's model pads (ImageList.from_tensors(images, backbone.size_divisibility)).
  if (backbone_divisibility > 1) {
    if (p.size_divisibility == 0) p.size_divisibility = backbone_divisibility;
    if (p.size_divisibility % backbone_divisibility != 0)
      throw ConfigError("size-divisibility " + std::to_string(p.size_divisibility) +
                        " does not suit this FPN: its top-down levels need the input padded to a multiple of " +
                        std::to_string(backbone_divisibility) +
                        " (its size_divisibility, the stride of its last in-feature); use 0 for that, or a multiple");
  }
  detail::check_frame_options(p);  // what preprocess_frame checks, so that the first frame cannot fail on them
  return p;
}

}  // namespace

const char* model_step_name(ModelStep step) {
  switch (step) {
    case ModelStep::ConfigFile: return "config-file";
    case ModelStep::Config: return "config";
    case ModelStep::Build: return "build";
    case ModelStep::WeightsFile: return "weights-file";
    case ModelStep::Weights: return "weights";
    case ModelStep::EngineSettings: return "engine-settings";
    case ModelStep::EngineDevice: return "engine-device";
    case ModelStep::Preprocess: return "preprocess";
  }
  return "unknown";
}

namespace {

void check_feature_maps_only(const ModelSpec& spec, const Model& m) {
  if (spec.feature_maps_only)
    for (const auto& [name, shape] : m.output_shape)
      if (name == "linear") {
        const std::string msg =
            "out feature \"linear\" is not a feature map: the meta holds N,C,H,W maps (stem, res2 .. res5, p-levels)";
        throw ModelBuildError(ModelStep::Build, msg, msg);
      }
}

template <typename Net>
void finish_model(const ModelSpec& spec, Net& net, int64_t divisibility, Model& m) {
  m.backbone_size_divisibility = divisibility;
  load_weights(spec, net, m);
  create_model_engine(spec, net, m);
  try {
    m.preprocess = preprocess_options(spec, m.config, divisibility);
  } catch (const std::exception& e) {
    throw PreprocessSettingsError(ModelStep::Preprocess, e.what(), e.what());
  }
}

Model load_fpn_model(const ModelSpec& spec, Model m) {
  const std::string name = m.config.get_string("MODEL.BACKBONE.NAME");
  std::optional<FPN> fpn;
  try {
    fpn.emplace(name == "build_retinanet_resnet_fpn_backbone" ? build_retinanet_resnet_fpn_backbone(m.config)
                                                               : build_resnet_fpn_backbone(m.config));
  } catch (const std::exception& e) {
    throw ModelBuildError(ModelStep::Build, std::string("cannot build the backbone (") + name + "): " + e.what(),
                          e.what());
  }
  try {
    fpn->set_out_features(spec.out_features);
  } catch (const std::exception& e) {
    throw ModelConfigError(ModelStep::Config, "out features " + list_text(spec.out_features) + ": " + e.what(),
                           e.what());
  }
  m.output_shape = fpn->out_feature_shapes();
  check_feature_maps_only(spec, m);
  m.name = model_name(m.config);
  finish_model(spec, *fpn, fpn->size_divisibility(), m);
  return m;
}

}  // namespace

Model load_model(const ModelSpec& spec) {
  Model m;
  m.config = assemble_config(spec);
  if (is_fpn_config(m.config)) return load_fpn_model(spec, std::move(m));

  std::optional<ResNet> net;
  try {
    net.emplace(build_resnet_backbone(m.config));
  } catch (const std::exception& e) {
    throw ModelBuildError(ModelStep::Build, std::string("cannot build the backbone: ") + e.what(), e.what());
  }
  m.output_shape = net->output_shape();
  check_feature_maps_only(spec, m);
  m.name = model_name(m.config);
  finish_model(spec, *net, 0, m);
  return m;
}

FramePreprocessOptions model_preprocess(const ModelSpec& spec, const Model& model) {
  try {
    return preprocess_options(spec, model.config, model.backbone_size_divisibility);
  } catch (const std::exception& e) {
    throw PreprocessSettingsError(ModelStep::Preprocess, e.what(), e.what());
  }
}

Device resolve_device(const std::string& engine, const std::string& device) {
  if (device != "auto" && !device.empty()) return Device::parse(device);
  // A named engine runs on its kind of device; "auto" on cuda:0 where CUDA is available.
  if (const EngineInfo* e = find_engine(engine)) return e->cuda_device ? Device::cuda(0) : Device::cpu();
  return cuda_is_available() ? Device::cuda(0) : Device::cpu();
}

std::vector<std::string> split_out_features(const std::string& csv) {
  std::vector<std::string> names;
  if (csv.find_first_not_of(" \t") == std::string::npos) return names;
  size_t begin = 0;
  while (true) {
    const size_t end = csv.find(',', begin);
    std::string item = csv.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    const auto b = item.find_first_not_of(" \t");
    names.push_back(b == std::string::npos ? std::string() : item.substr(b, item.find_last_not_of(" \t") - b + 1));
    if (end == std::string::npos) return names;
    begin = end + 1;
  }
}

std::string model_name(const Config& cfg) {
  const int64_t depth = cfg.get_int("MODEL.RESNETS.DEPTH");
  const int64_t groups = cfg.get_int("MODEL.RESNETS.NUM_GROUPS");
  const int64_t width = cfg.get_int("MODEL.RESNETS.WIDTH_PER_GROUP");
  std::string name = groups > 1 ? "X-" + std::to_string(depth) + "-" + std::to_string(groups) + "x" +
                                      std::to_string(width) + "d"
                                : "R-" + std::to_string(depth);
  if (cfg.get_int("MODEL.RESNETS.RES5_DILATION") == 2) name += "-DC5";
  const std::string backbone = cfg.get_string("MODEL.BACKBONE.NAME");
  if (backbone == "build_resnet_fpn_backbone") name += "-FPN";
  if (backbone == "build_retinanet_resnet_fpn_backbone") name = "RetinaNet-" + name + "-FPN";
  return name;
}

int64_t padded_size(int64_t size, int64_t size_divisibility) { return detail::padded_size(size, size_divisibility); }

}  // namespace backbone
