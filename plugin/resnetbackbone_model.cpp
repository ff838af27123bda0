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
    case GST_RESNET_BACKBONE_PRECISION_AUTO:
      spec.precision = backbone::Precision::Auto;
      break;
    default:
      spec.precision = backbone::Precision::Float32;
      break;
  }
  spec.num_threads = static_cast<int> (s.num_threads);
  switch (s.conv_algorithm) {
    case GST_RESNET_BACKBONE_CONV_ALGORITHM_DIRECT:
      spec.conv_algorithm = backbone::ConvAlgorithm::Direct;
      break;
    case GST_RESNET_BACKBONE_CONV_ALGORITHM_WINOGRAD:
      spec.conv_algorithm = backbone::ConvAlgorithm::Winograd;
      break;
    default:
      spec.conv_algorithm = backbone::ConvAlgorithm::Auto;
      break;
  }
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


/* The library's warnings as the element's: seeded weights on the bus, the rest in the log. */
static void
post_warnings (GstResnetBackbone * self, const std::vector<backbone::ModelWarning> &warnings)
{
  for (const backbone::ModelWarning & w : warnings) {
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
}

/* model-instance-id: the process's instance of that id (loaded by its first user) and a stream
 * into its batcher with this element's preprocessing. */
static std::unique_ptr<Model>
load_shared_model (GstResnetBackbone * self, const Settings & s, const backbone::ModelSpec & spec)
{
  backbone::BatchOptions batch;
  batch.batch_size = static_cast<int> (s.batch_size);
  batch.batch_timeout_ns = static_cast<int64_t> (s.batch_timeout);
  auto model = std::make_unique<Model> ();
  try {
    model->instance = backbone::ModelInstance::acquire (s.model_instance_id, spec, batch);
    const backbone::Model & m = model->instance->model ();
    model->preprocess = backbone::model_preprocess (spec, m);
    model->stream = model->instance->open_stream (model->preprocess);
    model->engine = m.engine.get ();
    model->engine_description = m.description;
    model->name = m.name;
    for (const auto &[name, shape] : m.output_shape)
      model->strides[name] = shape.stride.value_or (0);
    post_warnings (self, m.warnings);
  } catch (const backbone::ModelError &e) {
    throw StartError {GST_RESOURCE_ERROR, error_code (e.step ()), e.what ()};
  } catch (const backbone::InstanceMismatch &e) {
    throw StartError {GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS, e.what ()};
  }
  GST_INFO_OBJECT (self, "model instance \"%s\" (%ld users): %s, batch-size %u, batch-timeout %"
      GST_TIME_FORMAT ": %s", s.model_instance_id.c_str (), model->instance.use_count () - 1,
      model->name.c_str (), s.batch_size, GST_TIME_ARGS (s.batch_timeout),
      model->engine_description.c_str ());
  return model;
}

std::unique_ptr<Model>
gst_resnet_backbone_load_model (GstResnetBackbone * self, const Settings & s)
{
  const backbone::ModelSpec spec = model_spec (s);
  if (!s.model_instance_id.empty ())
    return load_shared_model (self, s, spec);
  if (s.batch_size > 1 || s.batch_timeout > 0)
    GST_WARNING_OBJECT (self, "batch-size %u and batch-timeout %" G_GUINT64_FORMAT " apply to a "
        "shared model (model-instance-id): a private model runs each frame alone", s.batch_size,
        s.batch_timeout);
  backbone::Model loaded;
  try {
    loaded = backbone::load_model (spec);
  } catch (const backbone::ModelError &e) {
    throw StartError {GST_RESOURCE_ERROR, error_code (e.step ()), e.what ()};
  }
  if (loaded.load_report)
    GST_INFO_OBJECT (self, "%s", loaded.load_report->c_str ());
  post_warnings (self, loaded.warnings);

  auto model = std::make_unique<Model> ();
  model->own_engine = std::move (loaded.engine);
  model->engine = model->own_engine.get ();
  model->engine_description = loaded.description;
  model->preprocess = loaded.preprocess;
  model->name = loaded.name;
  for (const auto &[name, spec] : loaded.output_shape)
    model->strides[name] = spec.stride.value_or (0);
  GST_INFO_OBJECT (self, "engine (engine=%s precision=%s num-threads=%u conv-algorithm=%s): %s",
      s.engine.c_str (), backbone::precision_name (spec.precision), s.num_threads,
      backbone::conv_algorithm_name (spec.conv_algorithm),
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
