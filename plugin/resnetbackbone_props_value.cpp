/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone's property values: set (validated, refused outside NULL/READY for the model's
 * settings) and get.
 */
#include <gst/base/gstbasetransform.h>

#include <algorithm>
#include <string>

#include "backbone/engine.h"
#include "backbone/engine_table.h"
#include "backbone/tensor.h"
#include "resnetbackbone_private.h"

#define GST_CAT_DEFAULT gst_resnet_backbone_debug

static std::vector<double>
doubles_from_array (GstResnetBackbone * self, const GValue * value, bool *ok)
{
  std::vector<double> out;
  const guint n = gst_value_array_get_size (value);
  *ok = true;
  for (guint i = 0; i < n; ++i) {
    const GValue *v = gst_value_array_get_value (value, i);
    GValue d = G_VALUE_INIT;
    g_value_init (&d, G_TYPE_DOUBLE);
    if (g_value_transform (v, &d)) {
      out.push_back (g_value_get_double (&d));
    } else {
      GST_WARNING_OBJECT (self, "a value of type %s in a pixel-mean/pixel-std array is not a "
          "number: the property keeps its value", G_VALUE_TYPE_NAME (v));
      *ok = false;
    }
    g_value_unset (&d);
  }
  return out;
}

static void
doubles_to_array (const std::vector<double> &values, GValue * value)
{
  for (double x : values) {
    GValue v = G_VALUE_INIT;
    g_value_init (&v, G_TYPE_DOUBLE);
    g_value_set_double (&v, x);
    gst_value_array_append_and_take_value (value, &v);
  }
}

/* A refused value: in the debug log and as a warning message on the bus (never a g_warning, which
 * applications and tests may make fatal). */
static void
refuse (GstResnetBackbone * self, const std::string & why)
{
  GST_WARNING_OBJECT (self, "%s", why.c_str ());
  gst_element_post_message (GST_ELEMENT (self), gst_message_new_warning (GST_OBJECT (self),
          g_error_new (GST_CORE_ERROR, GST_CORE_ERROR_FAILED, "%s", why.c_str ()), why.c_str ()));
}

void
gst_resnet_backbone_set_property (GObject * object, guint prop_id, const GValue * value,
    GParamSpec * pspec)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);
  Settings & s = self->priv->settings;
  auto str = [value]() {
    const gchar *v = g_value_get_string (value);
    return std::string (v ? v : "");
  };

  std::string refused;
  GST_OBJECT_LOCK (self);
  /* The model's settings apply at the next start: refused, not silently stored, while it runs. */
  if (!(pspec->flags & GST_PARAM_MUTABLE_PLAYING) && GST_STATE (self) > GST_STATE_READY) {
    refused = std::string ("property \"") + pspec->name + "\" cannot change in state " +
        gst_element_state_get_name (GST_STATE (self)) + ": set it in the NULL or READY state "
        "(the model is loaded at READY to PAUSED); the element keeps its value";
    GST_OBJECT_UNLOCK (self);
    refuse (self, refused);
    return;
  }
  switch (prop_id) {
    case PROP_CONFIG_FILE:
      s.config_file = str ();
      break;
    case PROP_WEIGHTS:
      s.weights = str ();
      break;
    case PROP_OUT_FEATURES:
      s.out_features = str ();
      break;
    case PROP_ENGINE:{
      std::string v = str ();
      if (v.empty ())
        v = DEFAULT_ENGINE;
      if (v != "auto" && !backbone::is_known_engine (v))
        refused = "engine \"" + v + "\" is unknown: expected auto, " + backbone::engine_names () +
            "; the element keeps engine \"" + s.engine + "\"";
      else
        s.engine = v;
      break;
    }
    case PROP_DEVICE:{
      std::string v = str ();
      if (v.empty ())
        v = DEFAULT_DEVICE;
      try {
        if (v != "auto")
          (void) backbone::Device::parse (v);
        s.device = v;
      } catch (const std::exception &e) {
        refused = "device \"" + v + "\": " + e.what () + " (expected auto, cpu or cuda:N); the "
            "element keeps device \"" + s.device + "\"";
      }
      break;
    }
    case PROP_PRECISION:
      s.precision = (GstResnetBackbonePrecision) g_value_get_enum (value);
      break;
    case PROP_NUM_THREADS:
      s.num_threads = g_value_get_uint (value);
      break;
    case PROP_CONV_ALGORITHM:
      s.conv_algorithm = (GstResnetBackboneConvAlgorithm) g_value_get_enum (value);
      break;
    case PROP_WINOGRAD:
      /* deprecated alias of conv-algorithm */
      s.conv_algorithm = g_value_get_boolean (value) ? GST_RESNET_BACKBONE_CONV_ALGORITHM_WINOGRAD :
          GST_RESNET_BACKBONE_CONV_ALGORITHM_DIRECT;
      break;
    case PROP_ALLOW_TF32:
      s.allow_tf32 = g_value_get_boolean (value);
      break;
    case PROP_INPUT_FORMAT:
      s.input_format = (GstResnetBackboneInputFormat) g_value_get_enum (value);
      break;
    case PROP_PIXEL_MEAN:
    case PROP_PIXEL_STD:{
      bool ok = true;
      std::vector<double> v = doubles_from_array (self, value, &ok);
      if (ok)
        (prop_id == PROP_PIXEL_MEAN ? s.pixel_mean : s.pixel_std) = v;
      break;
    }
    case PROP_RESIZE:
      s.resize = (GstResnetBackboneResize) g_value_get_enum (value);
      break;
    case PROP_MIN_SIZE:
      s.min_size = g_value_get_uint (value);
      break;
    case PROP_MAX_SIZE:
      s.max_size = g_value_get_uint (value);
      break;
    case PROP_WIDTH:
      s.width = g_value_get_uint (value);
      break;
    case PROP_HEIGHT:
      s.height = g_value_get_uint (value);
      break;
    case PROP_SIZE_DIVISIBILITY:
      s.size_divisibility = g_value_get_uint (value);
      break;
    case PROP_MODEL_INSTANCE_ID:
      s.model_instance_id = str ();
      break;
    case PROP_BATCH_SIZE:
      s.batch_size = g_value_get_uint (value);
      break;
    case PROP_BATCH_TIMEOUT:
      s.batch_timeout = g_value_get_uint64 (value);
      break;
    case PROP_INFERENCE_INTERVAL:
      s.inference_interval = g_value_get_uint (value);
      break;
    case PROP_POOL_SIZE:
      s.pool_size = g_value_get_uint (value);
      break;
    case PROP_FEATURE_MEMORY_LIMIT:
      s.feature_memory_limit = g_value_get_uint64 (value);
      break;
    case PROP_POOL_TIMEOUT:
      s.pool_timeout = g_value_get_uint64 (value);
      break;
    case PROP_UNIQUE_ID:
      s.unique_id = g_value_get_uint (value);
      break;
    case PROP_QOS:
      s.qos = g_value_get_boolean (value);
      break;
    case PROP_MAX_ERRORS:
      s.max_errors = g_value_get_int (value);
      break;
    case PROP_LATENCY:
      s.latency = g_value_get_uint64 (value);
      break;
    case PROP_TENSOR_META:
      s.tensor_meta = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  const bool pool_changed = prop_id == PROP_POOL_SIZE || prop_id == PROP_FEATURE_MEMORY_LIMIT;
  const gstbackbone::FeaturePoolLimits limits = gst_resnet_backbone_pool_limits (s);
  GST_OBJECT_UNLOCK (self);
  if (!refused.empty ())
    refuse (self, refused);
  if (pool_changed) {
    std::lock_guard<std::mutex> guard (self->priv->lock);
    if (self->priv->pool)
      self->priv->pool->set_limits (limits);
  }
  if (prop_id == PROP_LATENCY)
    gst_element_post_message (GST_ELEMENT (self), gst_message_new_latency (GST_OBJECT (self)));
}

void
gst_resnet_backbone_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);
  const Settings & s = self->priv->settings;
  auto set_str = [value](const std::string & v, bool null_when_empty) {
    g_value_set_string (value, (v.empty () && null_when_empty) ? nullptr : v.c_str ());
  };

  if (prop_id == PROP_STATS) {
    g_value_take_boxed (value, gst_resnet_backbone_stats_structure (self));
    return;
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_CONFIG_FILE:
      set_str (s.config_file, true);
      break;
    case PROP_WEIGHTS:
      set_str (s.weights, true);
      break;
    case PROP_OUT_FEATURES:
      set_str (s.out_features, false);
      break;
    case PROP_ENGINE:
      set_str (s.engine, false);
      break;
    case PROP_DEVICE:
      set_str (s.device, false);
      break;
    case PROP_PRECISION:
      g_value_set_enum (value, s.precision);
      break;
    case PROP_NUM_THREADS:
      g_value_set_uint (value, s.num_threads);
      break;
    case PROP_CONV_ALGORITHM:
      g_value_set_enum (value, s.conv_algorithm);
      break;
    case PROP_WINOGRAD:
      g_value_set_boolean (value,
          s.conv_algorithm == GST_RESNET_BACKBONE_CONV_ALGORITHM_WINOGRAD);
      break;
    case PROP_ALLOW_TF32:
      g_value_set_boolean (value, s.allow_tf32);
      break;
    case PROP_INPUT_FORMAT:
      g_value_set_enum (value, s.input_format);
      break;
    case PROP_PIXEL_MEAN:
      doubles_to_array (s.pixel_mean, value);
      break;
    case PROP_PIXEL_STD:
      doubles_to_array (s.pixel_std, value);
      break;
    case PROP_RESIZE:
      g_value_set_enum (value, s.resize);
      break;
    case PROP_MIN_SIZE:
      g_value_set_uint (value, s.min_size);
      break;
    case PROP_MAX_SIZE:
      g_value_set_uint (value, s.max_size);
      break;
    case PROP_WIDTH:
      g_value_set_uint (value, s.width);
      break;
    case PROP_HEIGHT:
      g_value_set_uint (value, s.height);
      break;
    case PROP_SIZE_DIVISIBILITY:
      g_value_set_uint (value, s.size_divisibility);
      break;
    case PROP_MODEL_INSTANCE_ID:
      set_str (s.model_instance_id, true);
      break;
    case PROP_BATCH_SIZE:
      g_value_set_uint (value, s.batch_size);
      break;
    case PROP_BATCH_TIMEOUT:
      g_value_set_uint64 (value, s.batch_timeout);
      break;
    case PROP_INFERENCE_INTERVAL:
      g_value_set_uint (value, s.inference_interval);
      break;
    case PROP_POOL_SIZE:
      g_value_set_uint (value, s.pool_size);
      break;
    case PROP_FEATURE_MEMORY_LIMIT:
      g_value_set_uint64 (value, s.feature_memory_limit);
      break;
    case PROP_POOL_TIMEOUT:
      g_value_set_uint64 (value, s.pool_timeout);
      break;
    case PROP_UNIQUE_ID:
      g_value_set_uint (value, s.unique_id);
      break;
    case PROP_QOS:
      g_value_set_boolean (value, s.qos);
      break;
    case PROP_MAX_ERRORS:
      g_value_set_int (value, s.max_errors);
      break;
    case PROP_LATENCY:
      g_value_set_uint64 (value, s.latency);
      break;
    case PROP_TENSOR_META:
      g_value_set_boolean (value, s.tensor_meta);
      break;
    case PROP_MODEL_NAME:
      set_str (self->priv->model_name, false);
      break;
    case PROP_ENGINE_DESCRIPTION:
      set_str (self->priv->engine_description, false);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

gstbackbone::FeaturePoolLimits
gst_resnet_backbone_pool_limits (const Settings & s)
{
  gstbackbone::FeaturePoolLimits l;
  l.max_outputs = s.pool_size;
  l.max_bytes = s.feature_memory_limit;
  return l;
}
