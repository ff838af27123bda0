/* SPDX-License-Identifier: Apache-2.0
 *
 * read-meta DATA_DIR: reads the feature meta in C through the installed meta library, from a
 * pipeline that uses the installed plugin:
 *
 *   appsrc (frame_rgb.npy, 64x48 RGB) ! resnetbackbone config-file=narrow.yaml weights=narrow.pth
 *     ! appsink
 *
 * and checks every level of the meta (name, dtype, dims, strides, stride, geometry) and its values
 * against detectron2's features of that frame (d2_res2..5.npy in DATA_DIR = tests/data/plugin/,
 * made by tests/data/make_plugin.py), within 1e-4 of the level's largest magnitude.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <gst/gst.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/featuremeta/featuremeta.h>

/* The data of a version-1 .npy file with the given dtype descriptor; NULL when it is not one. */
static guint8 *
read_npy (const gchar * path, const gchar * descr, gsize * n_bytes)
{
  gchar *contents = NULL;
  gsize length = 0, header_len;
  guint8 *data;

  if (!g_file_get_contents (path, &contents, &length, NULL))
    return NULL;
  if (length < 10 || memcmp (contents, "\x93NUMPY", 6) != 0 || contents[6] != 1) {
    g_free (contents);
    return NULL;
  }
  header_len = (guint8) contents[8] | ((gsize) (guint8) contents[9] << 8);
  if (10 + header_len > length || !g_strstr_len (contents + 10, header_len, descr)
      || g_strstr_len (contents + 10, header_len, "'fortran_order': True")) {
    g_free (contents);
    return NULL;
  }
  *n_bytes = length - 10 - header_len;
  data = g_memdup2 (contents + 10 + header_len, *n_bytes);
  g_free (contents);
  return data;
}

static int
check_level (const GstFeatureMeta * meta, const gchar * dir, const gchar * name, gsize channels,
    guint stride)
{
  const GstFeatureLevel *level = gst_feature_meta_get_level (meta, name);
  gchar *path = g_strdup_printf ("%s/d2_%s.npy", dir, name);
  gsize n_bytes = 0, n, i, c, h, w;
  guint8 *want = read_npy (path, "'<f4'", &n_bytes);
  GstMapInfo map;
  gdouble max_ref = 0.0, max_diff = 0.0;
  int ok;

  if (!want) {
    g_printerr ("%s: not a little-endian float32 .npy file\n", path);
    g_free (path);
    return 0;
  }
  g_free (path);
  if (!level) {
    g_printerr ("no level %s in the meta\n", name);
    g_free (want);
    return 0;
  }
  /* 64x48 input, no padding: H = ceil(48 / stride), W = ceil(64 / stride). */
  if (level->dtype != GST_FEATURE_DTYPE_FLOAT32 || level->num_dims != 4 || level->dims[0] != 1
      || level->dims[1] != channels || level->dims[2] != (48 + stride - 1) / stride
      || level->dims[3] != (64 + stride - 1) / stride || level->stride != stride
      || level->device != GST_FEATURE_DEVICE_CPU) {
    g_printerr ("%s: dtype %s, dims %" G_GSIZE_FORMAT "x%" G_GSIZE_FORMAT "x%" G_GSIZE_FORMAT "x%"
        G_GSIZE_FORMAT ", stride %u; expected float32 1x%" G_GSIZE_FORMAT "x%u x%u, stride %u\n",
        name, gst_feature_dtype_to_string (level->dtype), level->dims[0], level->dims[1],
        level->dims[2], level->dims[3], level->stride, channels, (48 + stride - 1) / stride,
        (64 + stride - 1) / stride, stride);
    g_free (want);
    return 0;
  }
  n = gst_feature_level_n_elements (level);
  if (n * 4 != n_bytes || !gst_feature_level_map (level, &map, GST_MAP_READ)) {
    g_printerr ("%s: %" G_GSIZE_FORMAT " elements, detectron2 has %" G_GSIZE_FORMAT "\n", name, n,
        n_bytes / 4);
    g_free (want);
    return 0;
  }
  i = 0;
  for (c = 0; c < level->dims[1]; c++)
    for (h = 0; h < level->dims[2]; h++)
      for (w = 0; w < level->dims[3]; w++, i++) {
        gfloat got, ref;
        memcpy (&got, map.data + (c * level->strides[1] + h * level->strides[2] +
                w * level->strides[3]) * sizeof (gfloat), sizeof (gfloat));
        memcpy (&ref, want + i * sizeof (gfloat), sizeof (gfloat));
        max_ref = MAX (max_ref, fabs (ref));
        max_diff = MAX (max_diff, fabs ((gdouble) got - ref));
      }
  gst_feature_level_unmap (level, &map);
  g_free (want);
  ok = max_ref > 0.0 && max_diff <= 1e-4 * max_ref;
  g_print ("%s [1, %" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT
      "] stride %u: max |x| %.4g, max |x - detectron2| %.3g %s\n", name, level->dims[1],
      level->dims[2], level->dims[3], level->stride, max_ref, max_diff, ok ? "ok" : "FAILED");
  return ok;
}

int
main (int argc, char **argv)
{
  static const gchar *names[] = { "res2", "res3", "res4", "res5" };
  GstElement *pipeline, *src, *sink;
  GstSample *sample;
  GstBuffer *frame;
  GstFeatureMeta *meta;
  GError *error = NULL;
  gchar *description, *npy;
  guint8 *pixels;
  gsize n_bytes = 0;
  int ok = 1, k;

  gst_init (&argc, &argv);
  if (argc != 2) {
    g_printerr ("usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  npy = g_strdup_printf ("%s/frame_rgb.npy", argv[1]);
  pixels = read_npy (npy, "'|u1'", &n_bytes);
  if (!pixels || n_bytes != 64 * 48 * 3) {
    g_printerr ("%s: expected a [48, 64, 3] uint8 .npy file\n", npy);
    return 1;
  }
  g_free (npy);

  description = g_strdup_printf ("appsrc name=src format=time "
      "caps=video/x-raw,format=RGB,width=64,height=48,framerate=1/1 "
      "! resnetbackbone config-file=%s/narrow.yaml weights=%s/narrow.pth num-threads=1 "
      "! appsink name=sink sync=false", argv[1], argv[1]);
  pipeline = gst_parse_launch (description, &error);
  g_free (description);
  if (!pipeline) {
    g_printerr ("pipeline: %s\n", error->message);
    return 1;
  }
  src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  gst_element_set_state (pipeline, GST_STATE_PLAYING);

  /* RGB rows of 64 pixels are 192 bytes, a multiple of 4: GStreamer's layout is the array's. */
  frame = gst_buffer_new_wrapped (pixels, n_bytes);
  GST_BUFFER_PTS (frame) = 0;
  GST_BUFFER_DURATION (frame) = GST_SECOND;
  gst_app_src_push_buffer (GST_APP_SRC (src), frame);
  gst_app_src_end_of_stream (GST_APP_SRC (src));

  sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 60 * GST_SECOND);
  if (!sample) {
    GstMessage *msg = gst_bus_timed_pop_filtered (GST_ELEMENT_BUS (pipeline), 0, GST_MESSAGE_ERROR);
    g_printerr ("no frame came out of the pipeline\n");
    if (msg) {
      GError *err = NULL;
      gst_message_parse_error (msg, &err, NULL);
      g_printerr ("error: %s\n", err->message);
      g_error_free (err);
      gst_message_unref (msg);
    }
    return 1;
  }
  meta = gst_buffer_get_feature_meta (gst_sample_get_buffer (sample));
  if (!meta) {
    g_printerr ("the buffer has no GstFeatureMeta\n");
    ok = 0;
  } else {
    g_print ("meta: version %u, model %s, frame %ux%u, input %ux%u, padded %ux%u, %u levels\n",
        meta->version, meta->model_name, meta->frame_width, meta->frame_height,
        meta->input_width, meta->input_height, meta->padded_width, meta->padded_height,
        meta->num_levels);
    if (meta->num_levels != 4 || meta->frame_width != 64 || meta->frame_height != 48
        || meta->padded_width != 64 || meta->padded_height != 48) {
      g_printerr ("expected 4 levels on a 64x48 frame, unpadded\n");
      ok = 0;
    }
    for (k = 0; k < 4; k++)
      ok &= check_level (meta, argv[1], names[k], 16u << k, 4u << k);
  }
  gst_sample_unref (sample);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (src);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
  return ok ? 0 : 1;
}
