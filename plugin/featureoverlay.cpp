/* SPDX-License-Identifier: Apache-2.0
 *
 * featureoverlay: one level's activation energy drawn as a heatmap over the video.
 */
/**
 * SECTION:element-featureoverlay
 * @title: featureoverlay
 *
 * Draws the activation energy of one level of the #GstFeatureMeta as a heatmap blended over the
 * video, in place, so that a person can see what the backbone responds to.
 *
 * - Energy of a cell: the L2 norm over the channels, sqrt (sum_c v²).
 * - Normalisation: per frame from the minimum to the maximum energy of the cells that cover the
 *   frame (cells of the bottom/right padding are left out), or a fixed range when
 *   #GstFeatureOverlay:range-max is above #GstFeatureOverlay:range-min; values outside the range
 *   are clamped. A frame whose energies are all equal maps to the bottom of the colormap.
 * - Geometry: frame pixel centre (x + 0.5, y + 0.5) is network-input point
 *   ((x + 0.5) * scale_x, (y + 0.5) * scale_y) and cell coordinate (u / stride - 0.5, v / stride
 *   - 0.5) between cell centres, sampled bilinearly and clamped to the cells that cover the frame
 *   (padding is outside the frame). A frame of another size than the meta's frame_width /
 *   frame_height (videoscale in between) is mapped onto the meta's frame first.
 * - Colour: normalised value t in [0, 1] -> entry min (int (t * 256), 255) of a 256-entry colormap
 *   (jet or inferno, as matplotlib samples them), blended as
 *   out = round ((1 - alpha) * pixel + alpha * colour) on R, G and B; alpha and padding bytes are
 *   kept.
 * - Level: #GstFeatureOverlay:level, or by default "res4" when present, else an FPN's "p4" (the
 *   same stride, 16) when present, else the coarsest level (largest stride) of the meta.
 *
 * Frames without a matching meta, or whose meta lacks the named level, pass unchanged.
 *
 * #GstFeatureOverlay:alpha, #GstFeatureOverlay:range-min and #GstFeatureOverlay:range-max are
 * controllable: with a control binding (gst_object_add_control_binding()) each frame takes their
 * values at its stream time (gst_object_sync_values()), e.g. a heatmap that fades in.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 videotestsrc ! videoconvert ! resnetbackbone ! featureoverlay level=res3 alpha=0.6 !
 *     videoconvert ! autovideosink
 * ]|
 */
#include "featureoverlay.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <gst/featuremeta/featuremeta.h>
#include <gst/video/video.h>


GST_DEBUG_CATEGORY_STATIC (gst_feature_overlay_debug);
#define GST_CAT_DEFAULT gst_feature_overlay_debug

/**
 * GstFeatureOverlayColormap:
 * @GST_FEATURE_OVERLAY_COLORMAP_JET: matplotlib's "jet" (blue - cyan - yellow - red)
 * @GST_FEATURE_OVERLAY_COLORMAP_INFERNO: matplotlib's "inferno" (black - purple - orange - yellow)
 *
 * Colormap of the heatmap.
 */
typedef enum {
  GST_FEATURE_OVERLAY_COLORMAP_JET = 0,
  GST_FEATURE_OVERLAY_COLORMAP_INFERNO = 1,
} GstFeatureOverlayColormap;

#define GST_TYPE_FEATURE_OVERLAY_COLORMAP (gst_feature_overlay_colormap_get_type ())
static GType
gst_feature_overlay_colormap_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FEATURE_OVERLAY_COLORMAP_JET, "Jet (blue to red)", "jet"},
    {GST_FEATURE_OVERLAY_COLORMAP_INFERNO, "Inferno (black to yellow, perceptually uniform)",
        "inferno"},
    {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFeatureOverlayColormap", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define DEFAULT_LEVEL ""
#define DEFAULT_COLORMAP GST_FEATURE_OVERLAY_COLORMAP_JET
#define DEFAULT_ALPHA 0.5
#define DEFAULT_UNIQUE_ID -1
#define DEFAULT_RANGE_MIN 0.0
#define DEFAULT_RANGE_MAX 0.0

enum
{
  PROP_0,
  PROP_LEVEL,
  PROP_COLORMAP,
  PROP_ALPHA,
  PROP_UNIQUE_ID,
  PROP_RANGE_MIN,
  PROP_RANGE_MAX,
};

namespace {

/* matplotlib's _inferno_data (lib/matplotlib/_cm_listed.py, CC0, by Nathaniel J. Smith, Stefan
 * van der Walt and Eric Firing): the 256 listed colours. */
const float kInferno[256][3] = {
  {0.001462f, 0.000466f, 0.013866f}, {0.002267f, 0.001270f, 0.018570f},
  {0.003299f, 0.002249f, 0.024239f}, {0.004547f, 0.003392f, 0.030909f},
  {0.006006f, 0.004692f, 0.038558f}, {0.007676f, 0.006136f, 0.046836f},
  {0.009561f, 0.007713f, 0.055143f}, {0.011663f, 0.009417f, 0.063460f},
  {0.013995f, 0.011225f, 0.071862f}, {0.016561f, 0.013136f, 0.080282f},
  {0.019373f, 0.015133f, 0.088767f}, {0.022447f, 0.017199f, 0.097327f},
  {0.025793f, 0.019331f, 0.105930f}, {0.029432f, 0.021503f, 0.114621f},
  {0.033385f, 0.023702f, 0.123397f}, {0.037668f, 0.025921f, 0.132232f},
  {0.042253f, 0.028139f, 0.141141f}, {0.046915f, 0.030324f, 0.150164f},
  {0.051644f, 0.032474f, 0.159254f}, {0.056449f, 0.034569f, 0.168414f},
  {0.061340f, 0.036590f, 0.177642f}, {0.066331f, 0.038504f, 0.186962f},
  {0.071429f, 0.040294f, 0.196354f}, {0.076637f, 0.041905f, 0.205799f},
  {0.081962f, 0.043328f, 0.215289f}, {0.087411f, 0.044556f, 0.224813f},
  {0.092990f, 0.045583f, 0.234358f}, {0.098702f, 0.046402f, 0.243904f},
  {0.104551f, 0.047008f, 0.253430f}, {0.110536f, 0.047399f, 0.262912f},
  {0.116656f, 0.047574f, 0.272321f}, {0.122908f, 0.047536f, 0.281624f},
  {0.129285f, 0.047293f, 0.290788f}, {0.135778f, 0.046856f, 0.299776f},
  {0.142378f, 0.046242f, 0.308553f}, {0.149073f, 0.045468f, 0.317085f},
  {0.155850f, 0.044559f, 0.325338f}, {0.162689f, 0.043554f, 0.333277f},
  {0.169575f, 0.042489f, 0.340874f}, {0.176493f, 0.041402f, 0.348111f},
  {0.183429f, 0.040329f, 0.354971f}, {0.190367f, 0.039309f, 0.361447f},
  {0.197297f, 0.038400f, 0.367535f}, {0.204209f, 0.037632f, 0.373238f},
  {0.211095f, 0.037030f, 0.378563f}, {0.217949f, 0.036615f, 0.383522f},
  {0.224763f, 0.036405f, 0.388129f}, {0.231538f, 0.036405f, 0.392400f},
  {0.238273f, 0.036621f, 0.396353f}, {0.244967f, 0.037055f, 0.400007f},
  {0.251620f, 0.037705f, 0.403378f}, {0.258234f, 0.038571f, 0.406485f},
  {0.264810f, 0.039647f, 0.409345f}, {0.271347f, 0.040922f, 0.411976f},
  {0.277850f, 0.042353f, 0.414392f}, {0.284321f, 0.043933f, 0.416608f},
  {0.290763f, 0.045644f, 0.418637f}, {0.297178f, 0.047470f, 0.420491f},
  {0.303568f, 0.049396f, 0.422182f}, {0.309935f, 0.051407f, 0.423721f},
  {0.316282f, 0.053490f, 0.425116f}, {0.322610f, 0.055634f, 0.426377f},
  {0.328921f, 0.057827f, 0.427511f}, {0.335217f, 0.060060f, 0.428524f},
  {0.341500f, 0.062325f, 0.429425f}, {0.347771f, 0.064616f, 0.430217f},
  {0.354032f, 0.066925f, 0.430906f}, {0.360284f, 0.069247f, 0.431497f},
  {0.366529f, 0.071579f, 0.431994f}, {0.372768f, 0.073915f, 0.432400f},
  {0.379001f, 0.076253f, 0.432719f}, {0.385228f, 0.078591f, 0.432955f},
  {0.391453f, 0.080927f, 0.433109f}, {0.397674f, 0.083257f, 0.433183f},
  {0.403894f, 0.085580f, 0.433179f}, {0.410113f, 0.087896f, 0.433098f},
  {0.416331f, 0.090203f, 0.432943f}, {0.422549f, 0.092501f, 0.432714f},
  {0.428768f, 0.094790f, 0.432412f}, {0.434987f, 0.097069f, 0.432039f},
  {0.441207f, 0.099338f, 0.431594f}, {0.447428f, 0.101597f, 0.431080f},
  {0.453651f, 0.103848f, 0.430498f}, {0.459875f, 0.106089f, 0.429846f},
  {0.466100f, 0.108322f, 0.429125f}, {0.472328f, 0.110547f, 0.428334f},
  {0.478558f, 0.112764f, 0.427475f}, {0.484789f, 0.114974f, 0.426548f},
  {0.491022f, 0.117179f, 0.425552f}, {0.497257f, 0.119379f, 0.424488f},
  {0.503493f, 0.121575f, 0.423356f}, {0.509730f, 0.123769f, 0.422156f},
  {0.515967f, 0.125960f, 0.420887f}, {0.522206f, 0.128150f, 0.419549f},
  {0.528444f, 0.130341f, 0.418142f}, {0.534683f, 0.132534f, 0.416667f},
  {0.540920f, 0.134729f, 0.415123f}, {0.547157f, 0.136929f, 0.413511f},
  {0.553392f, 0.139134f, 0.411829f}, {0.559624f, 0.141346f, 0.410078f},
  {0.565854f, 0.143567f, 0.408258f}, {0.572081f, 0.145797f, 0.406369f},
  {0.578304f, 0.148039f, 0.404411f}, {0.584521f, 0.150294f, 0.402385f},
  {0.590734f, 0.152563f, 0.400290f}, {0.596940f, 0.154848f, 0.398125f},
  {0.603139f, 0.157151f, 0.395891f}, {0.609330f, 0.159474f, 0.393589f},
  {0.615513f, 0.161817f, 0.391219f}, {0.621685f, 0.164184f, 0.388781f},
  {0.627847f, 0.166575f, 0.386276f}, {0.633998f, 0.168992f, 0.383704f},
  {0.640135f, 0.171438f, 0.381065f}, {0.646260f, 0.173914f, 0.378359f},
  {0.652369f, 0.176421f, 0.375586f}, {0.658463f, 0.178962f, 0.372748f},
  {0.664540f, 0.181539f, 0.369846f}, {0.670599f, 0.184153f, 0.366879f},
  {0.676638f, 0.186807f, 0.363849f}, {0.682656f, 0.189501f, 0.360757f},
  {0.688653f, 0.192239f, 0.357603f}, {0.694627f, 0.195021f, 0.354388f},
  {0.700576f, 0.197851f, 0.351113f}, {0.706500f, 0.200728f, 0.347777f},
  {0.712396f, 0.203656f, 0.344383f}, {0.718264f, 0.206636f, 0.340931f},
  {0.724103f, 0.209670f, 0.337424f}, {0.729909f, 0.212759f, 0.333861f},
  {0.735683f, 0.215906f, 0.330245f}, {0.741423f, 0.219112f, 0.326576f},
  {0.747127f, 0.222378f, 0.322856f}, {0.752794f, 0.225706f, 0.319085f},
  {0.758422f, 0.229097f, 0.315266f}, {0.764010f, 0.232554f, 0.311399f},
  {0.769556f, 0.236077f, 0.307485f}, {0.775059f, 0.239667f, 0.303526f},
  {0.780517f, 0.243327f, 0.299523f}, {0.785929f, 0.247056f, 0.295477f},
  {0.791293f, 0.250856f, 0.291390f}, {0.796607f, 0.254728f, 0.287264f},
  {0.801871f, 0.258674f, 0.283099f}, {0.807082f, 0.262692f, 0.278898f},
  {0.812239f, 0.266786f, 0.274661f}, {0.817341f, 0.270954f, 0.270390f},
  {0.822386f, 0.275197f, 0.266085f}, {0.827372f, 0.279517f, 0.261750f},
  {0.832299f, 0.283913f, 0.257383f}, {0.837165f, 0.288385f, 0.252988f},
  {0.841969f, 0.292933f, 0.248564f}, {0.846709f, 0.297559f, 0.244113f},
  {0.851384f, 0.302260f, 0.239636f}, {0.855992f, 0.307038f, 0.235133f},
  {0.860533f, 0.311892f, 0.230606f}, {0.865006f, 0.316822f, 0.226055f},
  {0.869409f, 0.321827f, 0.221482f}, {0.873741f, 0.326906f, 0.216886f},
  {0.878001f, 0.332060f, 0.212268f}, {0.882188f, 0.337287f, 0.207628f},
  {0.886302f, 0.342586f, 0.202968f}, {0.890341f, 0.347957f, 0.198286f},
  {0.894305f, 0.353399f, 0.193584f}, {0.898192f, 0.358911f, 0.188860f},
  {0.902003f, 0.364492f, 0.184116f}, {0.905735f, 0.370140f, 0.179350f},
  {0.909390f, 0.375856f, 0.174563f}, {0.912966f, 0.381636f, 0.169755f},
  {0.916462f, 0.387481f, 0.164924f}, {0.919879f, 0.393389f, 0.160070f},
  {0.923215f, 0.399359f, 0.155193f}, {0.926470f, 0.405389f, 0.150292f},
  {0.929644f, 0.411479f, 0.145367f}, {0.932737f, 0.417627f, 0.140417f},
  {0.935747f, 0.423831f, 0.135440f}, {0.938675f, 0.430091f, 0.130438f},
  {0.941521f, 0.436405f, 0.125409f}, {0.944285f, 0.442772f, 0.120354f},
  {0.946965f, 0.449191f, 0.115272f}, {0.949562f, 0.455660f, 0.110164f},
  {0.952075f, 0.462178f, 0.105031f}, {0.954506f, 0.468744f, 0.099874f},
  {0.956852f, 0.475356f, 0.094695f}, {0.959114f, 0.482014f, 0.089499f},
  {0.961293f, 0.488716f, 0.084289f}, {0.963387f, 0.495462f, 0.079073f},
  {0.965397f, 0.502249f, 0.073859f}, {0.967322f, 0.509078f, 0.068659f},
  {0.969163f, 0.515946f, 0.063488f}, {0.970919f, 0.522853f, 0.058367f},
  {0.972590f, 0.529798f, 0.053324f}, {0.974176f, 0.536780f, 0.048392f},
  {0.975677f, 0.543798f, 0.043618f}, {0.977092f, 0.550850f, 0.039050f},
  {0.978422f, 0.557937f, 0.034931f}, {0.979666f, 0.565057f, 0.031409f},
  {0.980824f, 0.572209f, 0.028508f}, {0.981895f, 0.579392f, 0.026250f},
  {0.982881f, 0.586606f, 0.024661f}, {0.983779f, 0.593849f, 0.023770f},
  {0.984591f, 0.601122f, 0.023606f}, {0.985315f, 0.608422f, 0.024202f},
  {0.985952f, 0.615750f, 0.025592f}, {0.986502f, 0.623105f, 0.027814f},
  {0.986964f, 0.630485f, 0.030908f}, {0.987337f, 0.637890f, 0.034916f},
  {0.987622f, 0.645320f, 0.039886f}, {0.987819f, 0.652773f, 0.045581f},
  {0.987926f, 0.660250f, 0.051750f}, {0.987945f, 0.667748f, 0.058329f},
  {0.987874f, 0.675267f, 0.065257f}, {0.987714f, 0.682807f, 0.072489f},
  {0.987464f, 0.690366f, 0.079990f}, {0.987124f, 0.697944f, 0.087731f},
  {0.986694f, 0.705540f, 0.095694f}, {0.986175f, 0.713153f, 0.103863f},
  {0.985566f, 0.720782f, 0.112229f}, {0.984865f, 0.728427f, 0.120785f},
  {0.984075f, 0.736087f, 0.129527f}, {0.983196f, 0.743758f, 0.138453f},
  {0.982228f, 0.751442f, 0.147565f}, {0.981173f, 0.759135f, 0.156863f},
  {0.980032f, 0.766837f, 0.166353f}, {0.978806f, 0.774545f, 0.176037f},
  {0.977497f, 0.782258f, 0.185923f}, {0.976108f, 0.789974f, 0.196018f},
  {0.974638f, 0.797692f, 0.206332f}, {0.973088f, 0.805409f, 0.216877f},
  {0.971468f, 0.813122f, 0.227658f}, {0.969783f, 0.820825f, 0.238686f},
  {0.968041f, 0.828515f, 0.249972f}, {0.966243f, 0.836191f, 0.261534f},
  {0.964394f, 0.843848f, 0.273391f}, {0.962517f, 0.851476f, 0.285546f},
  {0.960626f, 0.859069f, 0.298010f}, {0.958720f, 0.866624f, 0.310820f},
  {0.956834f, 0.874129f, 0.323974f}, {0.954997f, 0.881569f, 0.337475f},
  {0.953215f, 0.888942f, 0.351369f}, {0.951546f, 0.896226f, 0.365627f},
  {0.950018f, 0.903409f, 0.380271f}, {0.948683f, 0.910473f, 0.395289f},
  {0.947594f, 0.917399f, 0.410665f}, {0.946809f, 0.924168f, 0.426373f},
  {0.946392f, 0.930761f, 0.442367f}, {0.946403f, 0.937159f, 0.458592f},
  {0.946903f, 0.943348f, 0.474970f}, {0.947937f, 0.949318f, 0.491426f},
  {0.949545f, 0.955063f, 0.507860f}, {0.951740f, 0.960587f, 0.524203f},
  {0.954529f, 0.965896f, 0.540361f}, {0.957896f, 0.971003f, 0.556275f},
  {0.961812f, 0.975924f, 0.571925f}, {0.966249f, 0.980678f, 0.587206f},
  {0.971162f, 0.985282f, 0.602154f}, {0.976511f, 0.989753f, 0.616760f},
  {0.982257f, 0.994109f, 0.631017f}, {0.988362f, 0.998364f, 0.644924f},
};

/* matplotlib's _jet_data (lib/matplotlib/_cm.py): piecewise-linear segments (x, y) per channel. */
struct Segment {
  float x, y;
};
const Segment kJetRed[] = {{0.f, 0.f}, {0.35f, 0.f}, {0.66f, 1.f}, {0.89f, 1.f}, {1.f, 0.5f}};
const Segment kJetGreen[] =
    {{0.f, 0.f}, {0.125f, 0.f}, {0.375f, 1.f}, {0.64f, 1.f}, {0.91f, 0.f}, {1.f, 0.f}};
const Segment kJetBlue[] = {{0.f, 0.5f}, {0.11f, 1.f}, {0.34f, 1.f}, {0.65f, 0.f}, {1.f, 0.f}};

template <std::size_t N>
float
segment_value (const Segment (&seg)[N], float x)
{
  for (std::size_t i = 1; i < N; ++i) {
    if (x <= seg[i].x) {
      float t = (x - seg[i - 1].x) / (seg[i].x - seg[i - 1].x);
      return seg[i - 1].y + t * (seg[i].y - seg[i - 1].y);
    }
  }
  return seg[N - 1].y;
}

guint8
to_byte (float v)
{
  return (guint8) std::lround (std::min (1.f, std::max (0.f, v)) * 255.f);
}

struct Lut {
  guint8 rgb[256][3];
};

/* The 256 colours of a colormap, as matplotlib samples it (x = i / 255), rounded to bytes. */
const Lut &
colormap_lut (GstFeatureOverlayColormap cmap)
{
  static Lut jet, inferno;
  static std::once_flag once;
  std::call_once (once, [] {
        for (int i = 0; i < 256; ++i) {
          float x = i / 255.f;
          jet.rgb[i][0] = to_byte (segment_value (kJetRed, x));
          jet.rgb[i][1] = to_byte (segment_value (kJetGreen, x));
          jet.rgb[i][2] = to_byte (segment_value (kJetBlue, x));
          for (int c = 0; c < 3; ++c)
            inferno.rgb[i][c] = to_byte (kInferno[i][c]);
        }
      });
  return cmap == GST_FEATURE_OVERLAY_COLORMAP_INFERNO ? inferno : jet;
}

/* Bilinear taps of one axis: pixel -> two cells and the weight of the second. */
struct Tap {
  gsize i0, i1;
  float w1;
};

/* @n pixels of the video, @meta_size of the meta's frame (0 = same), @scale frame -> input,
 * @stride input pixels per cell, @valid cells covering the frame. */
std::vector<Tap>
make_taps (guint n, guint meta_size, double scale, guint stride, gsize valid)
{
  std::vector<Tap> taps (n);
  const double to_meta = meta_size > 0 ? (double) meta_size / n : 1.0;
  for (guint p = 0; p < n; ++p) {
    double u = (p + 0.5) * to_meta * scale;   /* network-input coordinate */
    double f = u / stride - 0.5;                /* between cell centres */
    f = std::min (std::max (f, 0.0), (double) (valid - 1));
    gsize i0 = (gsize) std::floor (f);
    gsize i1 = std::min (i0 + 1, valid - 1);
    taps[p] = Tap { i0, i1, (float) (f - (double) i0) };
  }
  return taps;
}

}  // namespace

/* *INDENT-OFF* */
struct GstFeatureOverlayPrivate {
  std::mutex lock;
  /* properties */
  std::string level = DEFAULT_LEVEL;
  GstFeatureOverlayColormap colormap = DEFAULT_COLORMAP;
  gdouble alpha = DEFAULT_ALPHA;
  gint unique_id = DEFAULT_UNIQUE_ID;
  gdouble range_min = DEFAULT_RANGE_MIN;
  gdouble range_max = DEFAULT_RANGE_MAX;

  /* streaming */
  std::set<std::string> warned;
  std::vector<float> energy;
  std::vector<float> row;
  std::vector<guint8> gather;
};
/* *INDENT-ON* */

struct _GstFeatureOverlay
{
  GstVideoFilter parent;
  GstFeatureOverlayPrivate *priv;
};

#define OVERLAY_FORMATS "{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR }"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (OVERLAY_FORMATS)));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (OVERLAY_FORMATS)));

#define gst_feature_overlay_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstFeatureOverlay, gst_feature_overlay, GST_TYPE_VIDEO_FILTER,
    GST_DEBUG_CATEGORY_INIT (gst_feature_overlay_debug, "featureoverlay", 0,
        "debug category for featureoverlay element"));
GST_ELEMENT_REGISTER_DEFINE (featureoverlay, "featureoverlay", GST_RANK_NONE,
    GST_TYPE_FEATURE_OVERLAY);

static void gst_feature_overlay_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_feature_overlay_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_feature_overlay_finalize (GObject * object);
static gboolean gst_feature_overlay_start (GstBaseTransform * trans);
static void gst_feature_overlay_before_transform (GstBaseTransform * trans, GstBuffer * buffer);
static GstFlowReturn gst_feature_overlay_transform_frame_ip (GstVideoFilter * filter,
    GstVideoFrame * frame);

static void
gst_feature_overlay_class_init (GstFeatureOverlayClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *base_transform_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *video_filter_class = GST_VIDEO_FILTER_CLASS (klass);

  gobject_class->set_property = gst_feature_overlay_set_property;
  gobject_class->get_property = gst_feature_overlay_get_property;
  gobject_class->finalize = gst_feature_overlay_finalize;

  /**
   * GstFeatureOverlay:level:
   *
   * The level to draw ("stem", "res2" .. "res5", an FPN's "p2" .. "p7"); empty picks "res4" when
   * the meta has it, else "p4", else the coarsest level (largest stride).
   */
  g_object_class_install_property (gobject_class, PROP_LEVEL,
      g_param_spec_string ("level", "Level",
          "Level to draw, e.g. \"res3\" or \"p3\" (empty = res4 if present, else p4, else the "
          "coarsest level)",
          DEFAULT_LEVEL, (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
              GST_PARAM_MUTABLE_PLAYING)));
  /**
   * GstFeatureOverlay:colormap:
   *
   * Colormap of the heatmap.
   */
  g_object_class_install_property (gobject_class, PROP_COLORMAP,
      g_param_spec_enum ("colormap", "Colormap", "Colormap of the heatmap",
          GST_TYPE_FEATURE_OVERLAY_COLORMAP, DEFAULT_COLORMAP, (GParamFlags) (G_PARAM_READWRITE |
              G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING)));
  /**
   * GstFeatureOverlay:alpha:
   *
   * Opacity of the heatmap: 0 leaves the video unchanged, 1 replaces it.
   */
  g_object_class_install_property (gobject_class, PROP_ALPHA,
      g_param_spec_double ("alpha", "Alpha",
          "Opacity of the heatmap (0 = video unchanged, 1 = heatmap only)",
          0.0, 1.0, DEFAULT_ALPHA, (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
              GST_PARAM_CONTROLLABLE | GST_PARAM_MUTABLE_PLAYING)));
  /**
   * GstFeatureOverlay:unique-id:
   *
   * Draw the meta of the producer with this unique-id; -1 takes the first feature meta.
   */
  g_object_class_install_property (gobject_class, PROP_UNIQUE_ID,
      g_param_spec_int ("unique-id", "Unique ID",
          "unique-id of the producer whose features are drawn (-1 = the first feature meta)",
          -1, G_MAXINT, DEFAULT_UNIQUE_ID, (GParamFlags) (G_PARAM_READWRITE |
              G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING)));
  /**
   * GstFeatureOverlay:range-min:
   *
   * Energy drawn as the bottom of the colormap when #GstFeatureOverlay:range-max is above it;
   * otherwise each frame is normalised from its own minimum to its maximum.
   */
  g_object_class_install_property (gobject_class, PROP_RANGE_MIN,
      g_param_spec_double ("range-min", "Range min",
          "Energy at the bottom of the colormap (fixed range used when range-max > range-min; "
          "otherwise per-frame min..max)", 0.0, G_MAXDOUBLE, DEFAULT_RANGE_MIN,
          (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_CONTROLLABLE |
              GST_PARAM_MUTABLE_PLAYING)));
  /**
   * GstFeatureOverlay:range-max:
   *
   * Energy drawn as the top of the colormap; 0 (or not above range-min) normalises per frame.
   */
  g_object_class_install_property (gobject_class, PROP_RANGE_MAX,
      g_param_spec_double ("range-max", "Range max",
          "Energy at the top of the colormap (0 = per-frame min..max)", 0.0, G_MAXDOUBLE,
          DEFAULT_RANGE_MAX, (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
              GST_PARAM_CONTROLLABLE | GST_PARAM_MUTABLE_PLAYING)));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "Feature map overlay", "Filter/Effect/Video/Analyzer",
      "Draws the activation energy of one backbone level as a heatmap over the video",
      "gst-backbone developers");

  base_transform_class->start = GST_DEBUG_FUNCPTR (gst_feature_overlay_start);
  base_transform_class->before_transform =
      GST_DEBUG_FUNCPTR (gst_feature_overlay_before_transform);
  video_filter_class->transform_frame_ip =
      GST_DEBUG_FUNCPTR (gst_feature_overlay_transform_frame_ip);

  gst_type_mark_as_plugin_api (GST_TYPE_FEATURE_OVERLAY_COLORMAP, (GstPluginAPIFlags) 0);
}

static void
gst_feature_overlay_init (GstFeatureOverlay * self)
{
  self->priv = new GstFeatureOverlayPrivate ();
}

static void
gst_feature_overlay_finalize (GObject * object)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (object);

  delete self->priv;
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_feature_overlay_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (object);
  GstFeatureOverlayPrivate *priv = self->priv;
  std::lock_guard < std::mutex > lk (priv->lock);

  switch (prop_id) {
    case PROP_LEVEL:{
      const gchar *s = g_value_get_string (value);
      priv->level = s ? s : "";
      break;
    }
    case PROP_COLORMAP:
      priv->colormap = (GstFeatureOverlayColormap) g_value_get_enum (value);
      break;
    case PROP_ALPHA:
      priv->alpha = g_value_get_double (value);
      break;
    case PROP_UNIQUE_ID:
      priv->unique_id = g_value_get_int (value);
      break;
    case PROP_RANGE_MIN:
      priv->range_min = g_value_get_double (value);
      break;
    case PROP_RANGE_MAX:
      priv->range_max = g_value_get_double (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static void
gst_feature_overlay_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (object);
  GstFeatureOverlayPrivate *priv = self->priv;
  std::lock_guard < std::mutex > lk (priv->lock);

  switch (prop_id) {
    case PROP_LEVEL:
      g_value_set_string (value, priv->level.c_str ());
      break;
    case PROP_COLORMAP:
      g_value_set_enum (value, priv->colormap);
      break;
    case PROP_ALPHA:
      g_value_set_double (value, priv->alpha);
      break;
    case PROP_UNIQUE_ID:
      g_value_set_int (value, priv->unique_id);
      break;
    case PROP_RANGE_MIN:
      g_value_set_double (value, priv->range_min);
      break;
    case PROP_RANGE_MAX:
      g_value_set_double (value, priv->range_max);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static gboolean
gst_feature_overlay_start (GstBaseTransform * trans)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (trans);

  self->priv->warned.clear ();
  return TRUE;
}

/* Controlled properties (alpha, range-min, range-max) take their values at the buffer's stream
 * time, as GStreamer's own filters do (videobalance, ...). */
static void
gst_feature_overlay_before_transform (GstBaseTransform * trans, GstBuffer * buffer)
{
  GstClockTime stream_time = gst_segment_to_stream_time (&trans->segment, GST_FORMAT_TIME,
      GST_BUFFER_PTS (buffer));

  GST_LOG_OBJECT (trans, "sync to %" GST_TIME_FORMAT, GST_TIME_ARGS (stream_time));
  if (GST_CLOCK_TIME_IS_VALID (stream_time))
    gst_object_sync_values (GST_OBJECT (trans), stream_time);
}

/* res4 when present, else an FPN's p4 (stride 16 both), else the level with the largest stride. */
static const GstFeatureLevel *
default_level (const GstFeatureMeta * meta)
{
  for (const char *name : {"res4", "p4"})
    if (const GstFeatureLevel * level = gst_feature_meta_get_level (meta, name))
      return level;
  const GstFeatureLevel *best = nullptr;
  for (guint i = 0; i < meta->num_levels; ++i)
    if (!best || meta->levels[i].stride >= best->stride)
      best = &meta->levels[i];
  return best;
}

static GstFlowReturn
gst_feature_overlay_transform_frame_ip (GstVideoFilter * filter, GstVideoFrame * frame)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (filter);
  GstFeatureOverlayPrivate *priv = self->priv;

  std::string want;
  GstFeatureOverlayColormap cmap;
  double alpha, range_min, range_max;
  gint unique_id;
  {
    std::lock_guard < std::mutex > lk (priv->lock);
    want = priv->level;
    cmap = priv->colormap;
    alpha = priv->alpha;
    unique_id = priv->unique_id;
    range_min = priv->range_min;
    range_max = priv->range_max;
  }

  GstFeatureMeta *meta = unique_id < 0 ? gst_buffer_get_feature_meta (frame->buffer) :
      gst_buffer_get_feature_meta_by_id (frame->buffer, (guint) unique_id);
  if (!meta) {
    GST_LOG_OBJECT (self, "no feature meta, frame unchanged");
    return GST_FLOW_OK;
  }
  const GstFeatureLevel *level = want.empty ()? default_level (meta) :
      gst_feature_meta_get_level (meta, want.c_str ());
  if (!level) {
    if (priv->warned.insert (want).second)
      GST_ELEMENT_WARNING (self, STREAM, FORMAT,
          ("The feature meta has no level \"%s\"; frames pass unchanged.", want.c_str ()),
          ("meta of unique-id %u has %u levels", meta->unique_id, meta->num_levels));
    return GST_FLOW_OK;
  }
  if (level->num_dims != 4 || level->dims[0] < 1 || level->dims[2] < 1 || level->dims[3] < 1 ||
      level->stride == 0) {
    GST_WARNING_OBJECT (self, "level %s has no usable shape", g_quark_to_string (level->name));
    return GST_FLOW_OK;
  }
  if (alpha <= 0.0)
    return GST_FLOW_OK;

  const gsize C = level->dims[1], H = level->dims[2], W = level->dims[3];
  const gsize sc = level->strides[1], sh = level->strides[2], sw = level->strides[3];

  /* energy per cell: L2 norm over the channels */
  GstMapInfo map;
  if (!gst_feature_level_map (level, &map, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Could not read the feature level \"%s\".",
            g_quark_to_string (level->name)), ("gst_feature_level_map failed"));
    return GST_FLOW_ERROR;
  }
  /* each row of each channel converted to float32 (gathered first when strided), then summed */
  const gsize es = gst_feature_dtype_size (level->dtype);
  priv->energy.assign (H * W, 0.f);
  priv->row.resize (W);
  priv->gather.resize (sw == 1 ? 0 : W * es);
  for (gsize c = 0; c < C; ++c)
    for (gsize y = 0; y < H; ++y) {
      const guint8 *src = map.data + (c * sc + y * sh) * es;
      if (sw != 1) {
        for (gsize x = 0; x < W; ++x)
          std::memcpy (priv->gather.data () + x * es, src + x * sw * es, es);
        src = priv->gather.data ();
      }
      if (!gst_feature_dtype_convert (level->dtype, src, W * es, GST_FEATURE_DTYPE_FLOAT32,
              (guint8 *) priv->row.data (), W * sizeof (float))) {
        gst_feature_level_unmap (level, &map);
        GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("The feature level \"%s\" has an unsupported "
                "dtype.", g_quark_to_string (level->name)), ("dtype %d (expected float16, "
                "float32 or bfloat16)", level->dtype));
        return GST_FLOW_ERROR;
      }
      float *out = priv->energy.data () + y * W;
      for (gsize x = 0; x < W; ++x)
        out[x] += priv->row[x] * priv->row[x];
    }
  gst_feature_level_unmap (level, &map);
  for (float &e : priv->energy)
    e = std::sqrt (e);

  /* geometry: which cells cover the frame, and how pixels map onto them */
  const guint width = GST_VIDEO_FRAME_WIDTH (frame);
  const guint height = GST_VIDEO_FRAME_HEIGHT (frame);
  const double scale_x = meta->scale_x > 0 ? meta->scale_x : 1.0;
  const double scale_y = meta->scale_y > 0 ? meta->scale_y : 1.0;
  const double in_w = meta->input_width > 0 ? meta->input_width :
      (meta->frame_width > 0 ? meta->frame_width : width) * scale_x;
  const double in_h = meta->input_height > 0 ? meta->input_height :
      (meta->frame_height > 0 ? meta->frame_height : height) * scale_y;
  const gsize valid_w = std::min<gsize> (W, std::max<gsize> (1,
          (gsize) std::ceil (in_w / level->stride)));
  const gsize valid_h = std::min<gsize> (H, std::max<gsize> (1,
          (gsize) std::ceil (in_h / level->stride)));

  float lo, hi;
  if (range_max > range_min) {
    lo = (float) range_min;
    hi = (float) range_max;
  } else {
    lo = hi = priv->energy[0];
    for (gsize y = 0; y < valid_h; ++y)
      for (gsize x = 0; x < valid_w; ++x) {
        lo = std::min (lo, priv->energy[y * W + x]);
        hi = std::max (hi, priv->energy[y * W + x]);
      }
  }
  const float inv = hi > lo ? 1.f / (hi - lo) : 0.f;

  const std::vector<Tap> tx = make_taps (width, meta->frame_width, scale_x, level->stride, valid_w);
  const std::vector<Tap> ty = make_taps (height, meta->frame_height, scale_y, level->stride, valid_h);

  const Lut & lut = colormap_lut (cmap);
  const float a = (float) alpha, keep = 1.f - a;
  guint8 *data = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (frame, 0);
  const gint stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);
  const gint pstride = GST_VIDEO_FRAME_COMP_PSTRIDE (frame, GST_VIDEO_COMP_R);
  const guint off[3] = {
    GST_VIDEO_FRAME_COMP_POFFSET (frame, GST_VIDEO_COMP_R),
    GST_VIDEO_FRAME_COMP_POFFSET (frame, GST_VIDEO_COMP_G),
    GST_VIDEO_FRAME_COMP_POFFSET (frame, GST_VIDEO_COMP_B),
  };

  for (guint y = 0; y < height; ++y) {
    const Tap & t = ty[y];
    const float *r0 = priv->energy.data () + t.i0 * W;
    const float *r1 = priv->energy.data () + t.i1 * W;
    guint8 *line = data + (gsize) y * stride;
    for (guint x = 0; x < width; ++x) {
      const Tap & s = tx[x];
      float top = r0[s.i0] + s.w1 * (r0[s.i1] - r0[s.i0]);
      float bottom = r1[s.i0] + s.w1 * (r1[s.i1] - r1[s.i0]);
      float e = top + t.w1 * (bottom - top);
      float v = (e - lo) * inv;
      int idx = v <= 0.f ? 0 : (v >= 1.f ? 255 : std::min (255, (int) (v * 256.f)));
      guint8 *px = line + (gsize) x * pstride;
      for (int c = 0; c < 3; ++c) {
        float out = keep * px[off[c]] + a * lut.rgb[idx][c];
        px[off[c]] = (guint8) std::min (255.f, out + 0.5f);
      }
    }
  }
  return GST_FLOW_OK;
}
