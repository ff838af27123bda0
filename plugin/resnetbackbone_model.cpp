/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone's model: the properties as a backbone::ModelSpec, loaded by the library's one
 * call (backbone::load_model, shared with backbone-infer, backbone-extract and the benchmarks), and
 * its errors and warnings as GStreamer messages.
 */
#include <gst/gst.h>

#include <string>

#include "backbone/engine_table.h"
#include "backbone/error.h"
#include "backbone/model.h"
#include "resnetbackbone_private.h"

#define GST_CAT_DEFAULT gst_resnet_backbone_debug

static backbone::ModelSpec
model_spec (const Settings & s)
{
  backbone::ModelSpec spec;
  spec.config_file = s.config_file;
  spec.out_features = backbone::split_out_features (s.out_features);
  spec.default_out_features = {"res2", "res3", "res4", "res5"};
  spec.feature_maps_only = true;
  spec.weights = s.weights;
  spec.engine = s.engine;
  spec.device = s.device;
  switch (s.precision) {
    case GST_RESNET_BACKBONE_PRECISION_FP16:
      spec.precision = backbone::Precision::Float16;
      break;
    case GST_RESNET_BACKBONE_PRECISION_BF16:
      spec.precision = backbone::Precision::BFloat16;
      break;
    default:
      spec.precision = backbone::Precision::Float32;
      break;
  }
  spec.num_threads = static_cast<int> (s.num_threads);
  spec.winograd = s.winograd;
  spec.allow_tf32 = s.allow_tf32;
  backbone::PreprocessOverrides &p = spec.preprocess;
  if (s.input_format == GST_RESNET_BACKBONE_INPUT_FORMAT_BGR)
    p.input_format = "BGR";
  else if (s.input_format == GST_RESNET_BACKBONE_INPUT_FORMAT_RGB)
    p.input_format = "RGB";
  p.pixel_mean = s.pixel_mean;
  p.pixel_std = s.pixel_std;
  switch (s.resize) {
    case GST_RESNET_BACKBONE_RESIZE_SHORTEST_EDGE:
      p.resize = backbone::ResizeMode::ShortestEdge;
      break;
    case GST_RESNET_BACKBONE_RESIZE_FIXED:
      p.resize = backbone::ResizeMode::Fixed;
      break;
    default:
      p.resize = backbone::ResizeMode::None;
      break;
  }
  p.min_size = s.min_size;
  p.max_size = s.max_size;
  p.width = s.width;
  p.height = s.height;
  p.size_divisibility = s.size_divisibility;
  return spec;
}

/* The GStreamer error code of a failed step. */
static gint
error_code (backbone::ModelStep step)
{
  switch (step) {
    case backbone::ModelStep::ConfigFile:
    case backbone::ModelStep::WeightsFile:
      return GST_RESOURCE_ERROR_NOT_FOUND;
    case backbone::ModelStep::Weights:
      return GST_RESOURCE_ERROR_READ;
    case backbone::ModelStep::EngineDevice:
      return GST_RESOURCE_ERROR_FAILED;
    default:
      return GST_RESOURCE_ERROR_SETTINGS;
  }
}

std::unique_ptr<Model>
gst_resnet_backbone_load_model (GstResnetBackbone * self, const Settings & s)
{
  const backbone::ModelSpec spec = model_spec (s);
  backbone::Model loaded;
  try {
    loaded = backbone::load_model (spec);
  } catch (const backbone::ModelError &e) {
    throw StartError {GST_RESOURCE_ERROR, error_code (e.step ()), e.what ()};
  }
  if (loaded.load_report)
    GST_INFO_OBJECT (self, "%s", loaded.load_report->c_str ());
  for (const backbone::ModelWarning & w : loaded.warnings) {
    if (w.kind == backbone::ModelWarning::Kind::SeededWeights)
      GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
          ("No weights given: the backbone uses seeded initial weights, so its features are not "
              "those of a trained model"),
          ("%s; set the weights property (or MODEL.WEIGHTS in the config) to a checkpoint",
              w.message.c_str ()));
    else if (w.kind == backbone::ModelWarning::Kind::SeededFpnWeights)
      GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
          ("The weights have no FPN layers: the pyramid uses seeded initial weights, so its "
              "p-levels are not those of a trained model"),
          ("%s; give a checkpoint of a detectron2 FPN model (model zoo or trained)",
              w.message.c_str ()));
    else
      GST_INFO_OBJECT (self, "%s", w.message.c_str ());
  }

  auto model = std::make_unique<Model> ();
  model->engine = std::move (loaded.engine);
  model->engine_description = loaded.description;
  model->preprocess = loaded.preprocess;
  model->name = loaded.name;
  for (const auto &[name, spec] : loaded.output_shape)
    model->strides[name] = spec.stride.value_or (0);
  GST_INFO_OBJECT (self, "engine (engine=%s precision=%s num-threads=%u): %s", s.engine.c_str (),
      backbone::precision_name (spec.precision), s.num_threads,
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

bool
gst_resnet_backbone_settings_want_cuda (const Settings & s, int *device, bool *explicit_request)
{
  backbone::Device d = backbone::Device::cpu ();
  try {
    d = backbone::resolve_device (s.engine, s.device);
  } catch (const std::exception &) {
    return false;               /* load_model reports the bad device */
  }
  const backbone::EngineInfo *engine = backbone::find_engine (s.engine);
  *device = d.is_cuda ()? d.index : 0;
  /* The properties name CUDA (a CUDA engine, or device=cuda:N), rather than device=auto finding a
   * GPU. */
  *explicit_request = (engine && engine->cuda_device) || (s.device != "auto" && d.is_cuda ());
  return d.is_cuda () && (engine == nullptr || engine->cuda_device);
}
