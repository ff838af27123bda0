/* SPDX-License-Identifier: Apache-2.0 */
#include "videoframe.h"

#include <string>

#include "backbone/error.h"

namespace gstbackbone {

gboolean
pixel_format_from_video_format (GstVideoFormat format, backbone::PixelFormat * out)
{
  using backbone::PixelFormat;
  PixelFormat f;
  switch (format) {
    case GST_VIDEO_FORMAT_RGB: f = PixelFormat::RGB; break;
    case GST_VIDEO_FORMAT_BGR: f = PixelFormat::BGR; break;
    case GST_VIDEO_FORMAT_RGBx: f = PixelFormat::RGBx; break;
    case GST_VIDEO_FORMAT_BGRx: f = PixelFormat::BGRx; break;
    case GST_VIDEO_FORMAT_xRGB: f = PixelFormat::xRGB; break;
    case GST_VIDEO_FORMAT_xBGR: f = PixelFormat::xBGR; break;
    case GST_VIDEO_FORMAT_RGBA: f = PixelFormat::RGBA; break;
    case GST_VIDEO_FORMAT_BGRA: f = PixelFormat::BGRA; break;
    case GST_VIDEO_FORMAT_ARGB: f = PixelFormat::ARGB; break;
    case GST_VIDEO_FORMAT_ABGR: f = PixelFormat::ABGR; break;
    case GST_VIDEO_FORMAT_NV12: f = PixelFormat::NV12; break;
    case GST_VIDEO_FORMAT_I420: f = PixelFormat::I420; break;
    case GST_VIDEO_FORMAT_GRAY8: f = PixelFormat::GRAY8; break;
    default:
      return FALSE;
  }
  if (out)
    *out = f;
  return TRUE;
}

backbone::ColorMatrix
color_matrix_from_video (GstVideoColorMatrix matrix)
{
  using backbone::ColorMatrix;
  switch (matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT709: return ColorMatrix::BT709;
    case GST_VIDEO_COLOR_MATRIX_BT2020: return ColorMatrix::BT2020;
    case GST_VIDEO_COLOR_MATRIX_FCC: return ColorMatrix::FCC;
    case GST_VIDEO_COLOR_MATRIX_SMPTE240M: return ColorMatrix::SMPTE240M;
    case GST_VIDEO_COLOR_MATRIX_BT601:
    case GST_VIDEO_COLOR_MATRIX_RGB:
    case GST_VIDEO_COLOR_MATRIX_UNKNOWN:
    default:
      return ColorMatrix::BT601;
  }
}

backbone::ColorRange
color_range_from_video (GstVideoColorRange range)
{
  return range == GST_VIDEO_COLOR_RANGE_0_255 ? backbone::ColorRange::Full :
      backbone::ColorRange::Limited;
}

backbone::ChromaSite
chroma_site_from_video (GstVideoChromaSite site)
{
  const bool h = (site & GST_VIDEO_CHROMA_SITE_H_COSITED) != 0;
  const bool v = (site & GST_VIDEO_CHROMA_SITE_V_COSITED) != 0;
  if (h && v)
    return backbone::ChromaSite::Cosited;
  if (h)
    return backbone::ChromaSite::HCosited;
  if (v)
    return backbone::ChromaSite::VCosited;
  return backbone::ChromaSite::Center;
}

backbone::FrameView
frame_view_from_video_frame (const GstVideoFrame * frame)
{
  const GstVideoInfo *info = &frame->info;
  backbone::FrameView view;
  if (!pixel_format_from_video_format (GST_VIDEO_INFO_FORMAT (info), &view.format))
    throw backbone::Error (std::string ("resnetbackbone: video format ") +
        gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (info)) +
        " is not supported; supported: " BACKBONE_VIDEO_FORMATS);
  view.width = GST_VIDEO_INFO_WIDTH (info);
  view.height = GST_VIDEO_INFO_HEIGHT (info);
  const guint n_planes = GST_VIDEO_INFO_N_PLANES (info);
  for (guint p = 0; p < n_planes && p < 3; ++p) {
    view.planes[p] = static_cast < const uint8_t *>(GST_VIDEO_FRAME_PLANE_DATA (frame, p));
    view.strides[p] = GST_VIDEO_FRAME_PLANE_STRIDE (frame, p);
  }
  if (GST_VIDEO_INFO_IS_YUV (info)) {
    view.matrix = color_matrix_from_video (info->colorimetry.matrix);
    view.range = color_range_from_video (info->colorimetry.range);
    view.chroma_site = chroma_site_from_video (GST_VIDEO_INFO_CHROMA_SITE (info));
  }
  return view;
}

gboolean
crop_frame_view (backbone::FrameView * view, const GstVideoInfo * info, guint x, guint y,
    guint width, guint height)
{
  if (width == 0 || height == 0 || (guint64) x + width > (guint64) view->width ||
      (guint64) y + height > (guint64) view->height)
    return FALSE;
  const GstVideoFormatInfo *finfo = info->finfo;
  const guint n_planes = GST_VIDEO_INFO_N_PLANES (info);
  /* Subsampled chroma: the crop must start on a chroma sample. */
  for (guint c = 0; c < GST_VIDEO_INFO_N_COMPONENTS (info); ++c) {
    const guint ws = GST_VIDEO_FORMAT_INFO_W_SUB (finfo, c), hs = GST_VIDEO_FORMAT_INFO_H_SUB (finfo, c);
    if ((x & ((1u << ws) - 1)) != 0 || (y & ((1u << hs) - 1)) != 0)
      return FALSE;
  }
  for (guint p = 0; p < n_planes && p < 3; ++p) {
    /* The first component stored in plane p gives its pixel stride and subsampling. */
    gint comp[GST_VIDEO_MAX_COMPONENTS];
    gst_video_format_info_component (finfo, p, comp);
    const gint c = comp[0] >= 0 ? comp[0] : 0;
    const guint px = x >> GST_VIDEO_FORMAT_INFO_W_SUB (finfo, c);
    const guint py = y >> GST_VIDEO_FORMAT_INFO_H_SUB (finfo, c);
    const gint pstride = GST_VIDEO_FORMAT_INFO_PSTRIDE (finfo, c);
    /* A pixel stride counts one component's step; interleaved chroma (NV12's UV) steps by 2
     * bytes per chroma sample, which the pixel stride of U already is. */
    view->planes[p] += (int64_t) py * view->strides[p] + (int64_t) px * pstride;
  }
  view->width = width;
  view->height = height;
  return TRUE;
}

}  /* namespace gstbackbone */
