/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone's caps: the same caps on both sides (in place), with frames in CUDA memory only
 * where the engine takes them, and the fixed caps upstream offers before any caps event.
 */
#include <gst/base/gstbasetransform.h>

#include <string>

#include "backbone/engine_table.h"
#include "resnetbackbone_private.h"
#include "videoframe.h"

#define GST_CAT_DEFAULT gst_resnet_backbone_debug

/* @caps without its structures in CUDA memory. (transfer full) */
GstCaps *
gst_resnet_backbone_caps_without_cuda_memory (GstCaps * caps)
{
  if (gst_caps_is_any (caps))
    return gst_caps_ref (caps);
  GstCaps *out = gst_caps_new_empty ();
  const guint n = gst_caps_get_size (caps);
  for (guint i = 0; i < n; ++i) {
    const GstCapsFeatures *f = gst_caps_get_features (caps, i);
    if (f != nullptr && !gst_caps_features_is_any (f) &&
        gst_caps_features_contains (f, CUDA_MEMORY_FEATURE))
      continue;
    gst_caps_append_structure_full (out, gst_structure_copy (gst_caps_get_structure (caps, i)),
        f ? gst_caps_features_copy (f) : nullptr);
  }
  return out;
}

gboolean
gst_resnet_backbone_caps_have_cuda_memory (GstCaps * caps)
{
  const guint n = gst_caps_get_size (caps);
  for (guint i = 0; i < n; ++i) {
    const GstCapsFeatures *f = gst_caps_get_features (caps, i);
    if (f != nullptr && !gst_caps_features_is_any (f) &&
        gst_caps_features_contains (f, CUDA_MEMORY_FEATURE))
      return TRUE;
  }
  return FALSE;
}

/* Whether the pads offer memory:CUDAMemory now: what the loaded model takes, or before start()
 * what the properties ask for (engine=cuda, or engine=auto with device=cuda:N). */
bool
gst_resnet_backbone_cuda_caps_allowed (GstResnetBackbone * self)
{
#if BACKBONE_HAVE_GST_CUDA
  const int state = self->priv->cuda_caps.load ();
  if (state >= 0)
    return state == 1;
  GST_OBJECT_LOCK (self);
  const std::string engine = self->priv->settings.engine;
  const std::string device = self->priv->settings.device;
  GST_OBJECT_UNLOCK (self);
  /* A CUDA engine, or auto on a device named cuda:N (not device=auto: that would load the CUDA
   * module to answer a caps query). */
  const backbone::EngineInfo *e = backbone::find_engine (engine);
  return (e != nullptr && e->cuda_device) ||
      (e == nullptr && engine == "auto" && device.rfind ("cuda", 0) == 0);
#else
  (void) self;
  return false;
#endif
}

/* In place: the same caps on both sides, less CUDA memory where the engine does not take it. */
GstCaps *
gst_resnet_backbone_transform_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps, GstCaps * filter)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstCaps *ret = gst_resnet_backbone_cuda_caps_allowed (self) ? gst_caps_ref (caps) :
      gst_resnet_backbone_caps_without_cuda_memory (caps);
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, ret, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (ret);
    ret = tmp;
  }
  GST_LOG_OBJECT (self, "%s caps %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, ret);
  return ret;
}

gboolean
gst_resnet_backbone_accept_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);

  if (gst_resnet_backbone_caps_have_cuda_memory (caps) && !gst_resnet_backbone_cuda_caps_allowed (self)) {
    GST_DEBUG_OBJECT (self, "refusing %" GST_PTR_FORMAT ": frames in CUDA memory need the cuda "
        "engine (engine=cuda, or engine=auto with device=cuda:N)", caps);
    return FALSE;
  }
  return GST_BASE_TRANSFORM_CLASS (gst_resnet_backbone_parent_class_ptr ())->accept_caps (trans, direction, caps);
}

/* Fixed video caps upstream offers before any caps event (a LATENCY query before the first frame,
 * e.g. a live source that has not pushed yet): the warm-up can run on them. */
gboolean
gst_resnet_backbone_peer_video_info (GstResnetBackbone * self, GstVideoInfo * info)
{
  GstCaps *caps = gst_pad_peer_query_caps (GST_BASE_TRANSFORM_SINK_PAD (self), nullptr);
  gboolean ok = FALSE;
  if (caps && !gst_caps_is_empty (caps) && !gst_caps_is_any (caps)) {
    GstCaps *sys = gst_resnet_backbone_caps_without_cuda_memory (caps);
    if (gst_caps_is_fixed (sys))
      ok = gst_video_info_from_caps (info, sys) &&
          gstbackbone::pixel_format_from_video_format (GST_VIDEO_INFO_FORMAT (info), nullptr);
    gst_caps_unref (sys);
  }
  gst_clear_caps (&caps);
  return ok;
}

