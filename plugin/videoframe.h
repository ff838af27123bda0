/* SPDX-License-Identifier: Apache-2.0
 *
 * GstVideoFrame / GstVideoInfo -> backbone::FrameView: the formats the resnetbackbone element
 * accepts, their plane pointers and strides, and the colorimetry (matrix, range) of YUV formats.
 */
#ifndef __GST_BACKBONE_VIDEO_FRAME_H__
#define __GST_BACKBONE_VIDEO_FRAME_H__

#include <gst/video/video.h>

#include "backbone/frame.h"

/* Every raw video format the element takes, in the syntax of a caps string list. */
#define BACKBONE_VIDEO_FORMATS \
  "{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR, NV12, I420, GRAY8 }"

namespace gstbackbone {

/* The library's pixel format for @format; FALSE when the element does not take @format. */
gboolean pixel_format_from_video_format (GstVideoFormat format, backbone::PixelFormat * out);

/* GStreamer's matrix / range -> the library's. An unknown matrix is BT.601 and an unknown range
 * is limited, as GStreamer assumes for YUV that carries no colorimetry. RGB (the identity matrix)
 * maps to BT.601 too: it only matters for YUV formats. */
backbone::ColorMatrix color_matrix_from_video (GstVideoColorMatrix matrix);
backbone::ColorRange color_range_from_video (GstVideoColorRange range);
/* Chroma siting (NV12): both cosited flags -> Cosited (also "dv"), one of them -> HCosited or
 * VCosited, none ("jpeg", "none", unknown) -> Center. */
backbone::ChromaSite chroma_site_from_video (GstVideoChromaSite site);

/* A view of a mapped frame: format, size, plane pointers and strides (bytes), matrix and range.
 * The view borrows the frame's memory: it is valid while @frame stays mapped.
 * Throws backbone::Error for a format the element does not take. */
backbone::FrameView frame_view_from_video_frame (const GstVideoFrame * frame);

/* Narrows @view to the rectangle (@x, @y, @width, @height) of the frame (a GstVideoCropMeta), by
 * moving its plane pointers. FALSE (the view unchanged) when the rectangle is empty or outside the
 * frame, or starts at an odd column or row of a format with subsampled chroma (NV12, I420), whose
 * chroma samples would not line up. */
gboolean crop_frame_view (backbone::FrameView * view, const GstVideoInfo * info, guint x, guint y,
    guint width, guint height);

}  /* namespace gstbackbone */

#endif /* __GST_BACKBONE_VIDEO_FRAME_H__ */
