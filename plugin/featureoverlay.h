/* SPDX-License-Identifier: Apache-2.0 */
#ifndef __GST_FEATURE_OVERLAY_H__
#define __GST_FEATURE_OVERLAY_H__

#include <gst/gst.h>
#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS

#define GST_TYPE_FEATURE_OVERLAY (gst_feature_overlay_get_type ())
G_DECLARE_FINAL_TYPE (GstFeatureOverlay, gst_feature_overlay, GST, FEATURE_OVERLAY, GstVideoFilter)

GST_ELEMENT_REGISTER_DECLARE (featureoverlay);

G_END_DECLS

#endif /* __GST_FEATURE_OVERLAY_H__ */
