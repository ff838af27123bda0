/* SPDX-License-Identifier: Apache-2.0
 *
 * read-features: reads the backbone's feature maps from an appsink through the feature meta
 * library alone (no LibTorch, no C++).
 *
 *   read-features ['<pipeline description with an appsink named sink>']
 *
 * Build against an installed gst-backbone:
 *   cc -o read-features read_features.c \
 *       $(pkg-config --cflags --libs gstreamer-featuremeta-1.0 gstreamer-app-1.0)
 *
 * For every frame it prints each feature meta (producer unique-id, model, geometry) and each
 * level's name, dtype, dims, strides and stride, and the mean of res2.
 */
#include <gst/gst.h>
#include <gst/app/gstappsink.h>
#include <gst/featuremeta/featuremeta.h>

#define DEFAULT_PIPELINE \
  "videotestsrc num-buffers=3 ! video/x-raw,width=320,height=240 ! resnetbackbone ! " \
  "appsink name=sink"

/* One element of a level as a double (float16 and bfloat16 converted by hand). */
static gdouble
element_value (const guint8 * p, GstFeatureDType dtype)
{
  switch (dtype) {
    case GST_FEATURE_DTYPE_FLOAT32:{
      gfloat f;
      memcpy (&f, p, sizeof (f));
      return f;
    }
    case GST_FEATURE_DTYPE_BFLOAT16:{
      guint16 h;
      guint32 bits;
      gfloat f;
      memcpy (&h, p, sizeof (h));
      bits = (guint32) h << 16;
      memcpy (&f, &bits, sizeof (f));
      return f;
    }
    case GST_FEATURE_DTYPE_FLOAT16:{
      guint16 h;
      guint exponent, mantissa;
      gdouble v;
      memcpy (&h, p, sizeof (h));
      exponent = (h >> 10) & 0x1f;
      mantissa = h & 0x3ff;
      if (exponent == 0)
        v = mantissa / 1024.0 / 16384.0;        /* subnormal: m * 2^-24 */
      else if (exponent == 31)
        v = mantissa ? 0.0 / 0.0 : 1.0 / 0.0;
      else
        v = (1.0 + mantissa / 1024.0) * (gdouble) (1u << exponent) / 32768.0;
      return (h & 0x8000) ? -v : v;
    }
  }
  return 0.0;
}

/* Mean over all elements of a level, walking its strides. */
static gboolean
level_mean (const GstFeatureLevel * level, gdouble * mean)
{
  GstMapInfo map;
  gsize esize = gst_feature_dtype_size (level->dtype);
  gsize n, c, h, w;
  gdouble sum = 0.0;

  if (!gst_feature_level_map (level, &map, GST_MAP_READ))
    return FALSE;
  for (n = 0; n < level->dims[0]; n++)
    for (c = 0; c < level->dims[1]; c++)
      for (h = 0; h < level->dims[2]; h++)
        for (w = 0; w < level->dims[3]; w++) {
          gsize i = n * level->strides[0] + c * level->strides[1] + h * level->strides[2] +
              w * level->strides[3];
          sum += element_value (map.data + i * esize, level->dtype);
        }
  gst_feature_level_unmap (level, &map);
  *mean = sum / (gdouble) gst_feature_level_n_elements (level);
  return TRUE;
}

static void
print_meta (const GstFeatureMeta * meta)
{
  guint i;

  g_print ("  producer %u, model %s, meta version %u: frame %ux%u -> input %ux%u (padded %ux%u), "
      "scale %.4f x %.4f\n", meta->unique_id, meta->model_name ? meta->model_name : "(unnamed)",
      meta->version, meta->frame_width, meta->frame_height, meta->input_width,
      meta->input_height, meta->padded_width, meta->padded_height, meta->scale_x, meta->scale_y);
  for (i = 0; i < meta->num_levels; i++) {
    const GstFeatureLevel *level = &meta->levels[i];
    const gchar *dtype = gst_feature_dtype_to_string (level->dtype);

    g_print ("    %-5s %s [%" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %"
        G_GSIZE_FORMAT "] strides [%" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT
        ", %" G_GSIZE_FORMAT "] stride %u on %s:%d\n", g_quark_to_string (level->name),
        dtype ? dtype : "?", level->dims[0], level->dims[1], level->dims[2], level->dims[3],
        level->strides[0], level->strides[1], level->strides[2], level->strides[3],
        level->stride, level->device == GST_FEATURE_DEVICE_CUDA ? "cuda" : "cpu",
        level->device_id);
  }

  {
    const GstFeatureLevel *res2 = gst_feature_meta_get_level (meta, "res2");
    gdouble mean;

    if (res2 == NULL)
      g_print ("    (no res2 level)\n");
    else if (level_mean (res2, &mean))
      g_print ("    mean of res2: %.6f\n", mean);
    else
      g_print ("    res2 could not be mapped\n");
  }
}

static void
print_error (GstMessage * msg)
{
  GError *error = NULL;
  gchar *debug = NULL;

  gst_message_parse_error (msg, &error, &debug);
  g_printerr ("error from %s: %s\n%s\n", GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)),
      error->message, debug ? debug : "");
  g_clear_error (&error);
  g_free (debug);
  gst_message_unref (msg);
}

int
main (int argc, char **argv)
{
  const gchar *description = argc > 1 ? argv[1] : DEFAULT_PIPELINE;
  GError *error = NULL;
  GstElement *pipeline, *sink;
  GstSample *sample;
  GstBus *bus;
  GstMessage *msg;
  guint frames = 0;
  int ret = 0;

  gst_init (&argc, &argv);

  pipeline = gst_parse_launch (description, &error);
  if (pipeline == NULL) {
    g_printerr ("could not build the pipeline \"%s\": %s\n", description, error->message);
    g_clear_error (&error);
    return 1;
  }
  if (error) {                  /* e.g. an element that is not installed */
    g_printerr ("could not build the pipeline \"%s\": %s\n", description, error->message);
    g_clear_error (&error);
    gst_object_unref (pipeline);
    return 1;
  }
  sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  if (sink == NULL || !GST_IS_APP_SINK (sink)) {
    g_printerr ("the pipeline needs an appsink named \"sink\"\n");
    gst_clear_object (&sink);
    gst_object_unref (pipeline);
    return 1;
  }

  bus = gst_element_get_bus (pipeline);
  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE)
    ret = 1;

  /* Samples until end of stream; an error message on the bus ends the loop too. */
  while (ret == 0) {
    sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 100 * GST_MSECOND);
    if (sample != NULL) {
      GstBuffer *buffer = gst_sample_get_buffer (sample);
      gpointer state = NULL;
      GstMeta *meta;
      guint n_metas = 0;

      g_print ("frame %u, pts %" GST_TIME_FORMAT "\n", frames++,
          GST_TIME_ARGS (GST_BUFFER_PTS (buffer)));
      while ((meta = gst_buffer_iterate_meta_filtered (buffer, &state,
                  GST_FEATURE_META_API_TYPE))) {
        print_meta ((const GstFeatureMeta *) meta);
        n_metas++;
      }
      if (n_metas == 0)
        g_print ("  no feature meta\n");
      gst_sample_unref (sample);
    } else if (gst_app_sink_is_eos (GST_APP_SINK (sink))) {
      break;
    } else if ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR)) != NULL) {
      print_error (msg);
      ret = 1;
    }
  }
  if (ret != 0 && frames == 0 && (msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR)))
    print_error (msg);          /* the state change failed: say why */
  gst_object_unref (bus);

  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
  g_print ("%u frames\n", frames);
  return ret;
}
