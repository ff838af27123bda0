/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone: GStreamer's standard tensor meta (GstTensorMeta, GStreamer's analytics library
 * 1.26 or newer) next to the GstFeatureMeta, for upstream elements, tensor decoders and
 * GstAnalytics users in Python.
 */
#ifndef __GST_RESNET_BACKBONE_TENSORMETA_H__
#define __GST_RESNET_BACKBONE_TENSORMETA_H__

#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>

/* Whether this build attaches GstTensorMeta (built against gstreamer-analytics-1.0 >= 1.26). */
bool gst_resnet_backbone_tensor_meta_built ();

/* Adds to @buf a GstTensorMeta with one GstTensor per level of @meta, in the same order: id the
 * quark of the level's name, row-major N,C,H,W dims, the level's data type, and the level's memory
 * (no copy: the level's buffer, or one sharing its memory region when the level starts at an
 * offset). Does nothing in a build without GstTensorMeta. Throws backbone::Error when a level
 * cannot be a GstTensor (not contiguous) or the buffer refuses the meta. */
void gst_resnet_backbone_add_tensor_meta (GstBuffer * buf, const GstFeatureMeta * meta);

#endif /* __GST_RESNET_BACKBONE_TENSORMETA_H__ */
