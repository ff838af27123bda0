/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone's model: the properties turned into a loaded engine and its preprocessing.
 */
#include <gst/gst.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

#include "backbone/checkpoint.h"
#include "backbone/config.h"
#include "backbone/engine.h"
#include "backbone/error.h"
#include "backbone/preprocess.h"
#include "backbone/resnet.h"
#include "resnetbackbone_private.h"

#define GST_CAT_DEFAULT gst_resnet_backbone_debug

/* The out features of the built-in model (no config-file). */
static const char *const kDefaultOutFeatures = "['res2', 'res3', 'res4', 'res5']";

/* "res2, res3" -> "['res2', 'res3']" for merge_from_list. */
static std::string
out_features_literal (const std::string & csv)
{
  std::string out = "[";
  std::stringstream in (csv);
  std::string item;
  bool first = true;
  while (std::getline (in, item, ',')) {
    const auto b = item.find_first_not_of (" \t");
    const auto e = item.find_last_not_of (" \t");
    if (b == std::string::npos)
      throw backbone::ConfigError ("out-features \"" + csv + "\" has an empty entry");
    item = item.substr (b, e - b + 1);
    if (item != "stem" && item != "res2" && item != "res3" && item != "res4" && item != "res5")
      throw backbone::ConfigError ("out-features \"" + csv + "\": unknown out feature \"" + item +
          "\" (expected stem, res2, res3, res4 or res5)");
    out += std::string (first ? "" : ", ") + "'" + item + "'";
    first = false;
  }
  return out + "]";
}

/* detectron2's naming of its ImageNet backbones: R-50, X-101-32x8d. */
static std::string
model_name_from_config (const backbone::Config & cfg)
{
  const int64_t depth = cfg.get_int ("MODEL.RESNETS.DEPTH");
  const int64_t groups = cfg.get_int ("MODEL.RESNETS.NUM_GROUPS");
  const int64_t width = cfg.get_int ("MODEL.RESNETS.WIDTH_PER_GROUP");
  std::string name = groups > 1 ? "X-" + std::to_string (depth) + "-" + std::to_string (groups) +
      "x" + std::to_string (width) + "d" : "R-" + std::to_string (depth);
  if (cfg.get_int ("MODEL.RESNETS.RES5_DILATION") == 2)
    name += "-DC5";
  return name;
}


std::unique_ptr<Model>
gst_resnet_backbone_load_model (GstResnetBackbone * self, const Settings & s)
{
  auto fail = [](gint code, const std::string & message) {
    return StartError {GST_RESOURCE_ERROR, code, message};
  };
  auto model = std::make_unique<Model> ();

  /* The config, with out-features overriding it. */
  if (!s.config_file.empty () && !g_file_test (s.config_file.c_str (), G_FILE_TEST_IS_REGULAR))
    throw fail (GST_RESOURCE_ERROR_NOT_FOUND, "config-file \"" + s.config_file +
        "\" does not exist or is not a regular file");
  backbone::Config cfg;
  try {
    std::vector<std::string> overrides;
    if (!s.out_features.empty ())
      overrides = {"MODEL.RESNETS.OUT_FEATURES", out_features_literal (s.out_features)};
    else if (s.config_file.empty ())
      overrides = {"MODEL.RESNETS.OUT_FEATURES", kDefaultOutFeatures};
    cfg = backbone::load_config (s.config_file, overrides);
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, std::string ("config-file \"") + s.config_file +
        "\": " + e.what ());
  }

  std::optional<backbone::ResNet> built;
  try {
    built.emplace (backbone::build_resnet_backbone (cfg));
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, std::string ("cannot build the backbone: ") + e.what ());
  }
  backbone::ResNet &net = *built;
  for (const auto &[name, spec] : net.output_shape ()) {
    if (name == "linear")
      throw fail (GST_RESOURCE_ERROR_SETTINGS,
          "out feature \"linear\" is not a feature map: the meta holds N,C,H,W maps "
          "(stem, res2 .. res5)");
    model->strides[name] = spec.stride.value_or (0);
  }

  /* Weights: the property, else the config's MODEL.WEIGHTS, else seeded initialisation. */
  std::string weights = s.weights;
  if (weights.empty ())
    weights = cfg.get_string ("MODEL.WEIGHTS");
  if (!weights.empty ()) {
    if (!g_file_test (weights.c_str (), G_FILE_TEST_IS_REGULAR))
      throw fail (GST_RESOURCE_ERROR_NOT_FOUND, "weights \"" + weights +
          "\" does not exist or is not a regular file" +
          (s.weights.empty () ? " (from the config's MODEL.WEIGHTS)" : ""));
    try {
      backbone::LoadReport report = backbone::load_checkpoint (net, weights, true);
      GST_INFO_OBJECT (self, "%s", report.summary ().c_str ());
    } catch (const std::exception &e) {
      throw fail (GST_RESOURCE_ERROR_READ, std::string ("weights \"") + weights + "\": " + e.what ());
    }
  } else {
    net.init_weights (0);
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("No weights given: the backbone uses seeded initial weights, so its features are not "
            "those of a trained model"),
        ("set the weights property (or MODEL.WEIGHTS in the config) to a checkpoint"));
  }

  /* The engine: "auto" or one of this build's, at the precision of the property. */
  const std::vector<std::string> engines = backbone::available_engines ();
  std::string engine_list;
  for (const auto &e : engines)
    engine_list += (engine_list.empty ()? "" : ", ") + e;
  if (engine_list.empty ())
    engine_list = "none";
  if (s.engine == "cuda" && std::find (engines.begin (), engines.end (), s.engine) == engines.end ()) {
    /* Built in (its library side always is) but the CUDA module or a device is missing: say why. */
    std::string why = "the CUDA module sees no device";
    try {
      const backbone::Device d = s.device == "auto" || s.device.empty ()? backbone::Device::cuda (0) :
          backbone::Device::parse (s.device);
      backbone::cuda_device_info (d.is_cuda ()? d.index : 0);
    } catch (const std::exception &e) {
      why = e.what ();
    }
    throw fail (GST_RESOURCE_ERROR_NOT_FOUND, "engine \"cuda\" on " + (s.device.empty () ?
            std::string ("auto") : s.device) + " cannot run: " + why +
        " (the engines of this build that run here: " + engine_list + ")");
  }
  if (s.engine != "auto" && std::find (engines.begin (), engines.end (), s.engine) == engines.end ()) {
    const bool known = s.engine == "onednn" || s.engine == "libtorch" || s.engine == "opencv";
    throw fail (GST_RESOURCE_ERROR_SETTINGS, (known ? "engine \"" + s.engine +
            "\" is not built into this copy of the backbone library" : "unknown engine \"" +
            s.engine + "\"") + ": expected auto or one of this build's engines (" + engine_list + ")");
  }
  backbone::EngineOptions options;
  options.engine = s.engine;
  options.num_threads = static_cast<int> (s.num_threads);
  options.winograd = s.winograd;
  options.allow_tf32 = s.allow_tf32;
  switch (s.precision) {
    case GST_RESNET_BACKBONE_PRECISION_FP16:
      options.precision = backbone::Precision::Float16;
      break;
    case GST_RESNET_BACKBONE_PRECISION_BF16:
      options.precision = backbone::Precision::BFloat16;
      break;
    default:
      options.precision = backbone::Precision::Float32;
      break;
  }
  const bool auto_device = s.device == "auto" || s.device.empty ();
  if (auto_device) {
    options.device = backbone::cuda_is_available ()? backbone::Device::cuda (0) :
        backbone::Device::cpu ();
  } else {
    try {
      options.device = backbone::Device::parse (s.device);
    } catch (const std::exception &e) {
      throw fail (GST_RESOURCE_ERROR_SETTINGS, std::string ("device: ") + e.what ());
    }
  }
  /* "engine "libtorch", precision bf16, on cpu: " */
  auto what = [&s, &options]() {
    return std::string ("engine \"") + s.engine + "\", precision " +
        backbone::precision_name (options.precision) + ", on " + options.device.str () + ": ";
  };
  try {
    try {
      model->engine = backbone::create_engine (net, options);
    } catch (const backbone::Error &e) {
      /* device=auto: CUDA is there but no engine of this build runs on it; the CPU then. */
      if (!auto_device || options.device.is_cpu () ||
          dynamic_cast<const backbone::UnsupportedError *> (&e) != nullptr)
        throw;
      GST_INFO_OBJECT (self, "device auto: %s; using the CPU", e.what ());
      options.device = backbone::Device::cpu ();
      model->engine = backbone::create_engine (net, options);
    }
  } catch (const backbone::UnsupportedError &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, what () + e.what ());
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_FAILED, what () + e.what ());
  }
  try {
    model->engine_description = model->engine->describe ();
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_FAILED, what () + "describe(): " + e.what ());
  }

  /* Preprocessing: the config, then the properties. */
  try {
    const backbone::PreprocessOptions base = backbone::PreprocessOptions::from_config (cfg);
    backbone::FramePreprocessOptions &p = model->preprocess;
    p.input_format = base.input_format;
    p.pixel_mean = base.pixel_mean;
    p.pixel_std = base.pixel_std;
    p.min_size = base.min_size_test;
    p.max_size = base.max_size_test;
    if (s.input_format == GST_RESNET_BACKBONE_INPUT_FORMAT_BGR)
      p.input_format = "BGR";
    else if (s.input_format == GST_RESNET_BACKBONE_INPUT_FORMAT_RGB)
      p.input_format = "RGB";
    if (!s.pixel_mean.empty ())
      p.pixel_mean = s.pixel_mean;
    if (!s.pixel_std.empty ())
      p.pixel_std = s.pixel_std;
    if (p.pixel_mean.size () != 3 || p.pixel_std.size () != 3)
      throw backbone::ConfigError ("pixel-mean and pixel-std need 3 values each (one per channel), "
          "found " + std::to_string (p.pixel_mean.size ()) + " and " +
          std::to_string (p.pixel_std.size ()));
    for (double v : p.pixel_std)
      if (v == 0.0 || !std::isfinite (v))
        throw backbone::ConfigError ("pixel-std values must be non-zero and finite, found " +
            std::to_string (v));
    switch (s.resize) {
      case GST_RESNET_BACKBONE_RESIZE_SHORTEST_EDGE:
        p.resize = backbone::ResizeMode::ShortestEdge;
        if (s.min_size > 0)
          p.min_size = s.min_size;
        if (s.max_size > 0)
          p.max_size = s.max_size;
        if (p.min_size <= 0 || p.max_size <= 0)
          throw backbone::ConfigError ("resize=shortest-edge needs min-size and max-size > 0 "
              "(here or as INPUT.MIN_SIZE_TEST / INPUT.MAX_SIZE_TEST), found " +
              std::to_string (p.min_size) + " and " + std::to_string (p.max_size));
        break;
      case GST_RESNET_BACKBONE_RESIZE_FIXED:
        p.resize = backbone::ResizeMode::Fixed;
        if (s.width == 0 || s.height == 0)
          throw backbone::ConfigError ("resize=fixed needs width and height > 0, found " +
              std::to_string (s.width) + "x" + std::to_string (s.height));
        p.width = s.width;
        p.height = s.height;
        break;
      default:
        p.resize = backbone::ResizeMode::None;
        break;
    }
    p.size_divisibility = s.size_divisibility;
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, e.what ());
  }

  model->name = model_name_from_config (cfg);
  GST_INFO_OBJECT (self, "engine (engine=%s precision=%s num-threads=%u): %s", s.engine.c_str (),
      backbone::precision_name (options.precision), s.num_threads,
      model->engine_description.c_str ());
  GST_INFO_OBJECT (self, "loaded %s on %s (engine %s), %zu out features, input %s, mean %g,%g,%g, "
      "std %g,%g,%g", model->name.c_str (), model->engine->device ().str ().c_str (),
      model->engine->name ().c_str (), model->strides.size (),
      model->preprocess.input_format.c_str (), model->preprocess.pixel_mean[0],
      model->preprocess.pixel_mean[1], model->preprocess.pixel_mean[2],
      model->preprocess.pixel_std[0], model->preprocess.pixel_std[1],
      model->preprocess.pixel_std[2]);
  return model;
}

/* Whether the properties ask for the cuda engine (engine=cuda, or engine=auto on a CUDA device),
 * and on which device. @explicit_request: the properties name CUDA (engine=cuda or device=cuda:N),
 * rather than device=auto finding a GPU. */
bool
gst_resnet_backbone_settings_want_cuda (const Settings & s, int *device, bool *explicit_request)
{
  const bool auto_device = s.device == "auto" || s.device.empty ();
  backbone::Device d = backbone::Device::cpu ();
  if (!auto_device) {
    try {
      d = backbone::Device::parse (s.device);
    } catch (const std::exception &) {
      return false;             /* load_model reports the bad device */
    }
  }
  *device = d.is_cuda ()? d.index : 0;
  *explicit_request = s.engine == "cuda" || d.is_cuda ();
  if (s.engine == "cuda")
    return auto_device || d.is_cuda ();
  if (s.engine == "auto")
    return d.is_cuda () || (auto_device && backbone::cuda_is_available ());
  return false;
}

