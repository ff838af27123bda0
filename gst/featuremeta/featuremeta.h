/* SPDX-License-Identifier: Apache-2.0
 *
 * GstFeatureMeta: multi-level backbone feature maps (stem, res2..res5, or an FPN's p2..p6 / p3..p7)
 * attached to a video buffer.
 * The only thing a downstream element or application needs to read them: plain C, GStreamer
 * alone, no LibTorch and no C++.
 *
 * Shaped like upstream's GstTensorMeta (GStreamer 1.26 analytics): registered once, a copy
 * transform that shares the data instead of copying it, gst_buffer_add_/get_ helpers, levels looked
 * up by name, and the data of each level held in a reference-counted GstBuffer. Unlike
 * GstTensorMeta it describes a video frame, so it has the tags of GstVideoRegionOfInterestMeta
 * ("video", "size", "orientation") and follows videoscale (see "Through other elements" below).
 *
 * Through other elements (GStreamer 1.22; the tags decide):
 * - Elements that pass the buffer on (queue, tee, capsfilter, appsink, any element in passthrough)
 *   keep the meta as it is. A copy of the buffer (gst_buffer_copy() and friends) copies the meta
 *   and shares the level data.
 * - videoconvert, videoscale and videoconvertscale call the transform with the video scale
 *   transform (GstVideoMetaTransform, in_info -> out_info): the meta is kept and its frame
 *   geometry updated (frame_width/height = the output size, scale_x/y follow), so the conversion
 *   helpers map the scaled frame. A meta whose frame size is not in_info's is dropped. The
 *   transform does not see borders that videoscale adds (add-borders, when the caps force another
 *   display aspect ratio): the geometry then spans the whole output frame, borders included.
 * - GstVideoFilter elements without their own meta handling drop it: videocrop when it copies the
 *   cropped region, videoflip (on GStreamer 1.24 and later videoflip sends a matrix transform,
 *   which the meta refuses: dropped as well), videobox. videocrop and videobox with nothing to
 *   crop are in passthrough: the meta stays, right (videoflip at identity still copies: dropped).
 * - videocrop crops in place when downstream accepts GstVideoCropMeta (and GstVideoMeta): the
 *   buffer keeps the whole frame and this meta, and gets a GstVideoCropMeta. The meta then
 *   describes the uncropped frame: a consumer applies the crop, point (x, y) of the cropped view
 *   being (crop.x + x, crop.y + y) of the meta's frame.
 * - Encoders based on GstVideoEncoder with its default transform_meta (x264enc, x265enc, jpegenc,
 *   ...) copy metas that have only these tags onto the encoded buffers (vp8enc and vp9enc copy
 *   every meta): the meta rides them, and the level data stays alive as long as an encoded frame
 *   does (lookahead, muxer queues).
 * - Every other transform type is refused (the meta is dropped), never leaving a false geometry.
 */
#ifndef __GST_FEATURE_META_H__
#define __GST_FEATURE_META_H__

#include <gst/gst.h>

G_BEGIN_DECLS

#ifndef GST_FEATURE_META_API
# ifdef BUILDING_GST_FEATURE_META
#  define GST_FEATURE_META_API __attribute__ ((visibility ("default")))
# else
#  define GST_FEATURE_META_API
# endif
#endif

/**
 * GST_FEATURE_META_VERSION:
 *
 * Layout version written into #GstFeatureMeta.version. Fields are only ever appended (the
 * reserved space shrinks), so a reader built against version N reads a meta of any version >= N.
 */
#define GST_FEATURE_META_VERSION 1

/**
 * GstFeatureDType:
 *
 * Element type of a level. The numbering mirrors GstTensorDataType of GStreamer 1.26.
 */
typedef enum {
  GST_FEATURE_DTYPE_FLOAT16 = 10,
  GST_FEATURE_DTYPE_FLOAT32 = 11,
  GST_FEATURE_DTYPE_BFLOAT16 = 13,
} GstFeatureDType;

/**
 * GstFeatureDevice:
 *
 * Where a level's data lives. CUDA levels hold a device allocation in their data buffer: one
 * feature device memory (<gst/featuremeta/featuredevicememory.h>), whose device pointer and
 * ready event gst_feature_level_get_device_pointer() gives without a copy.
 * gst_feature_level_map() maps that buffer with gst_buffer_map(): the memory downloads the data
 * to a host copy at the first read mapping, once.
 */
typedef enum {
  GST_FEATURE_DEVICE_CPU = 0,
  GST_FEATURE_DEVICE_CUDA = 1,
} GstFeatureDevice;

/**
 * GstFeatureLevel:
 * @name: the level's name as a quark: "stem", "res2" .. "res5", an FPN's "p2" .. "p6"
 *   (RetinaNet "p3" .. "p7")
 * @dtype: element type
 * @num_dims: always 4
 * @dims: N, C, H, W (N is 1 for one frame)
 * @strides: strides in elements for each of @dims
 * @stride: the level's stride in network-input pixels (4, 8, 16, 32; an FPN's p6 64, p7 128)
 * @device: where the data lives
 * @device_id: the N of cuda:N (0 on the CPU)
 * @data: the storage, one reference owned by the meta; shared (never copied) by every copy of
 *   the buffer, hence read-only
 * @offset: byte offset of element (0, 0, 0, 0) inside @data
 *
 * One feature map. Element (n, c, h, w) is at byte
 * `offset + (n * strides[0] + c * strides[1] + h * strides[2] + w * strides[3]) * gst_feature_dtype_size (dtype)`
 * of @data.
 */
typedef struct {
  GQuark name;
  GstFeatureDType dtype;
  guint num_dims;
  gsize dims[4];
  gsize strides[4];
  guint stride;
  GstFeatureDevice device;
  gint device_id;
  GstBuffer *data;
  gsize offset;

  /*< private >*/
  gpointer _gst_reserved[GST_PADDING];
} GstFeatureLevel;

/**
 * GstFeatureMeta:
 * @meta: parent
 * @version: GST_FEATURE_META_VERSION of the producer
 * @unique_id: the producer's unique-id property; one meta per producer on a buffer
 * @model_name: name of the model (e.g. "R-50"), owned by the meta
 * @frame_width: width of the video frame the meta describes: the frame the features were computed
 *   on, or that frame resized by videoscale/videoconvert (their scale transform updates it)
 * @frame_height: height of that frame
 * @input_width: width of the network input after resizing, before padding (what the producer
 *   fed the network; no transform changes it)
 * @input_height: height of the network input after resizing, before padding
 * @padded_width: width of the network input after padding to the size divisibility
 * @padded_height: height of the network input after padding
 * @scale_x: network-input pixels per frame pixel horizontally: input_width / frame_width (the
 *   scale transform updates it with frame_width)
 * @scale_y: network-input pixels per frame pixel vertically: input_height / frame_height
 * @num_levels: number of entries in @levels
 * @levels: (type gpointer): the @num_levels feature maps, in the producer's out-features order
 *   (an array; language bindings, which cannot read it, call
 *   gst_feature_meta_get_level_by_index())
 *
 * Feature maps of one frame. Frame pixel (x, y) is network-input pixel (x * scale_x, y * scale_y);
 * padding is at the bottom and right only, so it does not move coordinates. Network-input pixel
 * (u, v) falls in cell (u / stride, v / stride) of a level.
 *
 * The geometry describes the frame of the buffer the meta is on: videoscale and videoconvert
 * update it (the scale transform); elements that would change the frame otherwise drop the meta
 * (see the top of this header). A GstVideoCropMeta that an element after the producer adds
 * (videocrop cropping in place) is not applied to the geometry: the meta describes the frame
 * without that crop, and consumers apply it.
 */
typedef struct {
  GstMeta meta;

  guint32 version;
  guint unique_id;
  gchar *model_name;

  guint frame_width, frame_height;
  guint input_width, input_height;
  guint padded_width, padded_height;
  gdouble scale_x, scale_y;

  guint num_levels;
  GstFeatureLevel *levels;

  /*< private >*/
  gpointer _gst_reserved[GST_PADDING_LARGE];
} GstFeatureMeta;

GST_FEATURE_META_API GType gst_feature_meta_api_get_type (void);
#define GST_FEATURE_META_API_TYPE (gst_feature_meta_api_get_type ())

GST_FEATURE_META_API const GstMetaInfo *gst_feature_meta_get_info (void);
#define GST_FEATURE_META_INFO (gst_feature_meta_get_info ())

/* Adds an empty meta (version set, unique_id 0, scales 1, no levels) to a writable buffer.
 * Several metas (one per producer, told apart by unique_id) may be on one buffer. */
GST_FEATURE_META_API GstFeatureMeta *gst_buffer_add_feature_meta (GstBuffer * buffer);

/* The first feature meta of @buffer, or NULL. (transfer none) */
GST_FEATURE_META_API GstFeatureMeta *gst_buffer_get_feature_meta (GstBuffer * buffer);

/* The feature meta written by the producer with @unique_id, or NULL. (transfer none) */
GST_FEATURE_META_API GstFeatureMeta *gst_buffer_get_feature_meta_by_id (GstBuffer * buffer, guint unique_id);

/* Sets the model name (copied). */
GST_FEATURE_META_API void gst_feature_meta_set_model_name (GstFeatureMeta * meta, const gchar * model_name);

/* Appends a level (num_dims is always 4). @data: (transfer full), consumed also when the call
 * fails. @strides may be NULL for contiguous NCHW. Returns the new level (valid until the next
 * add_level, which may move the array), or NULL (with a g_critical) on invalid arguments: a dim
 * of 0, stride 0, an unknown dtype or device, a name already present, or data smaller than
 * offset + the extent the dims and strides describe. */
GST_FEATURE_META_API GstFeatureLevel *gst_feature_meta_add_level (GstFeatureMeta * meta, const gchar * name,
    GstFeatureDType dtype, const gsize dims[4], const gsize strides[4], guint stride,
    GstFeatureDevice device, gint device_id, GstBuffer * data, gsize offset);

/* The level called @name ("res4"), or NULL. (transfer none) */
GST_FEATURE_META_API const GstFeatureLevel *gst_feature_meta_get_level (const GstFeatureMeta * meta,
    const gchar * name);

/* The level with @name, @dtype and 4 dims, or NULL when absent or of another dtype. */
GST_FEATURE_META_API const GstFeatureLevel *gst_feature_meta_get_typed_level (const GstFeatureMeta * meta,
    const gchar * name, GstFeatureDType dtype);

/* Size of one element of @dtype in bytes (0 for an unknown value). */
GST_FEATURE_META_API gsize gst_feature_dtype_size (GstFeatureDType dtype);

/* Name of @dtype: "float32", "float16" or "bfloat16" (NULL for an unknown value). */
GST_FEATURE_META_API const gchar *gst_feature_dtype_to_string (GstFeatureDType dtype);

/* float32 <-> float16 (IEEE 754 binary16) and bfloat16 bit patterns, in the host's byte order.
 * To float16/bfloat16: round to nearest, ties to even; overflow gives infinity; NaN stays NaN
 * (quiet) with its sign. From float16/bfloat16: exact. */
GST_FEATURE_META_API guint16 gst_feature_dtype_float32_to_float16 (gfloat value);
GST_FEATURE_META_API gfloat gst_feature_dtype_float16_to_float32 (guint16 bits);
GST_FEATURE_META_API guint16 gst_feature_dtype_float32_to_bfloat16 (gfloat value);
GST_FEATURE_META_API gfloat gst_feature_dtype_bfloat16_to_float32 (guint16 bits);

/* Converts the @src_size bytes of contiguous @src_dtype elements at @src into @dest_dtype at
 * @dest (@dest_size bytes, room for as many elements; no overlap, no alignment needed), with the
 * rounding above (float16 <-> bfloat16 through float32: one rounding). FALSE, with a g_critical,
 * for an unknown dtype, a @src_size that is not a whole number of elements or a @dest too small. */
GST_FEATURE_META_API gboolean gst_feature_dtype_convert (GstFeatureDType src_dtype, const guint8 * src,
    gsize src_size, GstFeatureDType dest_dtype, guint8 * dest, gsize dest_size);

/* Maps a level's data for reading: info->data points at element (0, 0, 0, 0) (the level's
 * offset applied), info->size covers the level's extent in bytes. The data buffer is mapped with
 * gst_buffer_map(): in place for one system memory (no copy); a CUDA memory's allocator decides
 * how it reaches the host. Returns FALSE when @flags asks for writing (GST_MAP_WRITE), lacks
 * GST_MAP_READ, or the data cannot be mapped. Unmap with gst_feature_level_unmap(), which uses
 * the private state gst_feature_level_map() keeps in info->user_data[0]. */
GST_FEATURE_META_API gboolean gst_feature_level_map (const GstFeatureLevel * level, GstMapInfo * info,
    GstMapFlags flags);
GST_FEATURE_META_API void gst_feature_level_unmap (const GstFeatureLevel * level, GstMapInfo * info);

/* Number of elements (product of dims). */
GST_FEATURE_META_API gsize gst_feature_level_n_elements (const GstFeatureLevel * level);

/* Frame pixel (x, y) -> continuous cell coordinates (fx, fy) of @level, and back:
 * fx = x * scale_x / stride, fy = y * scale_y / stride. Either out pointer may be NULL. */
GST_FEATURE_META_API void gst_feature_meta_frame_to_feature (const GstFeatureMeta * meta,
    const GstFeatureLevel * level, gdouble x, gdouble y, gdouble * fx, gdouble * fy);
GST_FEATURE_META_API void gst_feature_meta_feature_to_frame (const GstFeatureMeta * meta,
    const GstFeatureLevel * level, gdouble fx, gdouble fy, gdouble * x, gdouble * y);

/* A box (x0, y0, x1, y1) in frame pixels -> the same box in cell coordinates of @level, and back. */
GST_FEATURE_META_API void gst_feature_meta_frame_box_to_feature (const GstFeatureMeta * meta,
    const GstFeatureLevel * level, const gdouble frame_box[4], gdouble feature_box[4]);
GST_FEATURE_META_API void gst_feature_meta_feature_box_to_frame (const GstFeatureMeta * meta,
    const GstFeatureLevel * level, const gdouble feature_box[4], gdouble frame_box[4]);

/* Accessors, for language bindings (GObject introspection) that cannot read the array fields or
 * index the level array; C code may read the fields as well (featureaccess.c). */
GST_FEATURE_META_API guint gst_feature_meta_get_n_levels (const GstFeatureMeta * meta);
GST_FEATURE_META_API const GstFeatureLevel *gst_feature_meta_get_level_by_index (const GstFeatureMeta * meta,
    guint index);
GST_FEATURE_META_API const gchar *gst_feature_meta_get_model_name (const GstFeatureMeta * meta);
GST_FEATURE_META_API const gchar *gst_feature_level_get_name (const GstFeatureLevel * level);
GST_FEATURE_META_API GstFeatureDType gst_feature_level_get_dtype (const GstFeatureLevel * level);
GST_FEATURE_META_API const gsize *gst_feature_level_get_dims (const GstFeatureLevel * level, guint * n_dims);
GST_FEATURE_META_API const gsize *gst_feature_level_get_strides (const GstFeatureLevel * level,
    guint * n_strides);
GST_FEATURE_META_API guint gst_feature_level_get_stride (const GstFeatureLevel * level);
GST_FEATURE_META_API GstFeatureDevice gst_feature_level_get_device (const GstFeatureLevel * level);
GST_FEATURE_META_API gint gst_feature_level_get_device_id (const GstFeatureLevel * level);
GST_FEATURE_META_API GstBuffer *gst_feature_level_get_data (const GstFeatureLevel * level);
GST_FEATURE_META_API gsize gst_feature_level_get_offset (const GstFeatureLevel * level);

G_END_DECLS

#endif /* __GST_FEATURE_META_H__ */
