/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone: one frame through the engine into a GstFeatureMeta, and the warm-up that
 * measures the latency.
 */
#include <gst/featuremeta/featuremeta.h>

#include <cstring>
#include <vector>

#include "backbone/error.h"
#include "backbone/model.h"
#include "backbone/preprocess.h"
#include "resnetbackbone_private.h"
#include "resnetbackbone_tensormeta.h"
#include "videoframe.h"

#define GST_CAT_DEFAULT gst_resnet_backbone_debug

/* The frame to infer on: the buffer's crop rectangle when it carries a GstVideoCropMeta (and the
 * crop fits the format), else the whole frame. */
backbone::FrameView
gst_resnet_backbone_frame_view (GstResnetBackbone * self, const Model & model,
    const GstVideoFrame * frame, GstBuffer * buf, bool on_device)
{
  backbone::FrameView view = gstbackbone::frame_view_from_video_frame (frame);
  if (on_device)
    view.device = backbone::Device::cuda (model.cuda_device);
  const GstVideoCropMeta *crop = gst_buffer_get_video_crop_meta (buf);
  if (crop && !(crop->x == 0 && crop->y == 0 && crop->width == (guint) view.width &&
          crop->height == (guint) view.height)) {
    if (!gstbackbone::crop_frame_view (&view, &frame->info, crop->x, crop->y, crop->width,
            crop->height))
      throw backbone::Error ("the buffer's crop meta (" + std::to_string (crop->x) + ", " +
          std::to_string (crop->y) + ") " + std::to_string (crop->width) + "x" +
          std::to_string (crop->height) + " does not fit the " +
          std::to_string (view.width) + "x" + std::to_string (view.height) + " " +
          gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&frame->info)) + " frame (or "
          "starts between chroma samples)");
    GST_LOG_OBJECT (self, "inferring on the crop (%u, %u) %ux%u", crop->x, crop->y, crop->width,
        crop->height);
  }
  return view;
}

guint64
gst_resnet_backbone_infer (GstResnetBackbone * self, Model & model,
    const std::shared_ptr<gstbackbone::FeatureSlot> & slot, const backbone::FrameView & view,
    bool on_device, GstBuffer * buf, guint unique_id, GstClockTime * batch_wait)
{
  *batch_wait = 0;
  gstbackbone::CudaContextScope scope (model.cuda);
  backbone::PreprocessResult info;
  backbone::FeatureMaps maps;
  if (model.stream) {
    /* A shared instance: the frame waits for its batch (at most batch-timeout, plus the forwards
     * queued before it) and gets its own rows of the batch's outputs. */
    backbone::BatchResult r = model.stream->infer (view);
    if (r.status == backbone::BatchResult::Status::Flushing)
      throw FlushingInterrupt ();
    maps = std::move (r.features);
    info = std::move (r.info);
    *batch_wait = static_cast<GstClockTime> (r.waited_ns);
    std::lock_guard<std::mutex> guard (self->priv->lock);
    Stats & st = self->priv->stats;
    st.batched_frames++;
    st.batch_size_total += static_cast<guint64> (r.batch_size);
    st.batch_wait_total += static_cast<GstClockTime> (r.waited_ns);
    st.batch_wait_max = MAX (st.batch_wait_max, static_cast<GstClockTime> (r.waited_ns));
  } else {
    maps = model.engine->forward_frame (view, model.preprocess, &info);
  }
  /* A frame in host memory is copied (staged for the upload) before forward_frame returns; one in
   * CUDA memory is read by the engine's kernel later, on its stream. */
  const std::shared_ptr<gstbackbone::FrameMemories> frame_memories = on_device ?
      gstbackbone::hold_frame_memories (buf) : nullptr;

  GstFeatureMeta *meta = gst_buffer_add_feature_meta (buf);
  if (!meta)
    throw backbone::Error ("gst_buffer_add_feature_meta failed (is the buffer writable?)");
  /* A frame that fails half-way carries no meta: none with some of the levels. */
  guint64 bytes = 0;
  try {
    meta->unique_id = unique_id;
    gst_feature_meta_set_model_name (meta, model.name.c_str ());
    meta->frame_width = static_cast<guint> (view.width);
    meta->frame_height = static_cast<guint> (view.height);
    meta->input_width = static_cast<guint> (info.resized_width);
    meta->input_height = static_cast<guint> (info.resized_height);
    /* The engine pads on its device and leaves info.tensor undefined: the padded size is the
     * resized size up to the size divisibility (detectron2's ImageList). */
    const int64_t div = model.preprocess.size_divisibility;
    meta->padded_width = static_cast<guint> (info.tensor.defined ()? info.tensor.size (3) :
        backbone::padded_size (info.resized_width, div));
    meta->padded_height = static_cast<guint> (info.tensor.defined ()? info.tensor.size (2) :
        backbone::padded_size (info.resized_height, div));
    meta->scale_x = info.scale_x;
    meta->scale_y = info.scale_y;

    for (auto &[name, tensor] : maps) {
      if (tensor.dim () != 4 || tensor.dtype () != backbone::DType::Float32)
        throw backbone::ShapeError ("output \"" + name + "\" is " + backbone::dtype_name (tensor.dtype ()) +
            " " + backbone::shape_str (tensor.shape ()) + ", expected float32 N,C,H,W");
      /* Levels stay on the GPU for the cuda engine; any other engine's are handed out on the host. */
      const bool on_gpu = model.cuda_engine && tensor.device ().is_cuda ();
      /* A strided CUDA output (none of this engine's) goes through the host to be made contiguous. */
      const backbone::Tensor level_tensor = on_gpu ? (tensor.is_contiguous ()? tensor :
          (backbone::cuda_wait_ready (tensor), tensor.contiguous ())) :
          tensor.device ().is_cpu ()? tensor.contiguous () : tensor.to (backbone::Device::cpu ()).contiguous ();
      gsize dims[4], strides[4];
      for (int d = 0; d < 4; ++d) {
        dims[d] = static_cast<gsize> (level_tensor.size (d));
        strides[d] = static_cast<gsize> (level_tensor.stride (d));
      }
      auto it = model.strides.find (name);
      const guint stride = it != model.strides.end ()? static_cast<guint> (it->second) : 0;
      GstBuffer *data = on_gpu ? gstbackbone::wrap_device_level (level_tensor, slot, model.cuda,
          frame_memories) : gstbackbone::FeaturePool::wrap (level_tensor, slot);
      bytes += level_tensor.nbytes ();
      if (!gst_feature_meta_add_level (meta, name.c_str (), GST_FEATURE_DTYPE_FLOAT32, dims, strides,
              stride, on_gpu ? GST_FEATURE_DEVICE_CUDA : GST_FEATURE_DEVICE_CPU,
              on_gpu ? level_tensor.device ().index : 0, data, 0))
        throw backbone::Error ("gst_feature_meta_add_level refused level \"" + name + "\" " +
            backbone::shape_str (level_tensor.shape ()));
    }
    GST_OBJECT_LOCK (self);
    const bool tensor_meta = self->priv->settings.tensor_meta;
    GST_OBJECT_UNLOCK (self);
    if (tensor_meta)
      gst_resnet_backbone_add_tensor_meta (buf, meta);
  } catch (...) {
    gst_buffer_remove_meta (buf, (GstMeta *) meta);
    throw;
  }
  if (model.cuda_engine)
    GST_LOG_OBJECT (self, "cuda engine: %s frame %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT ", %zu levels",
        on_device ? "CUDA-memory" : "system-memory", view.width, view.height, maps.size ());
  return bytes;
}

GstClockTime
gst_resnet_backbone_warm_up (GstResnetBackbone * self, Model & model, const GstVideoInfo * info)
{
  /* A blank frame in system memory of the negotiated size and format (every engine takes those). */
  GstBuffer *buf = gst_buffer_new_allocate (nullptr, GST_VIDEO_INFO_SIZE (info), nullptr);
  if (!buf)
    return GST_CLOCK_TIME_NONE;
  /* Zeros: black enough for the timing in every format. */
  gst_buffer_memset (buf, 0, 0, gst_buffer_get_size (buf));
  GstVideoFrame frame;
  if (!gst_video_frame_map (&frame, info, buf, GST_MAP_READWRITE)) {
    gst_buffer_unref (buf);
    return GST_CLOCK_TIME_NONE;
  }
  GstClockTime took = GST_CLOCK_TIME_NONE;
  try {
    gstbackbone::CudaContextScope scope (model.cuda);
    const backbone::FrameView view = gstbackbone::frame_view_from_video_frame (&frame);
    for (int run = 0; run < 2; ++run) {
      const gint64 t0 = g_get_monotonic_time ();
      backbone::FeatureMaps maps;
      gint64 waited_us = 0;
      if (model.stream) {
        /* Through the batcher, as the frames will go; its wait for other frames is not counted
         * (the latency adds batch-timeout). */
        backbone::BatchResult r = model.stream->infer (view);
        if (r.status == backbone::BatchResult::Status::Flushing)
          break;
        maps = std::move (r.features);
        waited_us = r.waited_ns / 1000;
      } else {
        maps = model.engine->forward_frame (view, model.preprocess, nullptr);
      }
      /* Until the features are ready: an engine that only queues work (cuda) is waited for. */
      for (auto &level : maps)
        backbone::cuda_wait_ready (level.second);
      took = (GstClockTime) MAX (g_get_monotonic_time () - t0 - waited_us, 0) * GST_USECOND;
    }
    GST_INFO_OBJECT (self, "warm-up on a %dx%d %s frame: %" GST_TIME_FORMAT " until the features "
        "are ready", GST_VIDEO_INFO_WIDTH (info), GST_VIDEO_INFO_HEIGHT (info),
        gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (info)), GST_TIME_ARGS (took));
  } catch (const std::exception &e) {
    GST_WARNING_OBJECT (self, "warm-up inference failed: %s", e.what ());
    took = GST_CLOCK_TIME_NONE;
  } catch (...) {
    took = GST_CLOCK_TIME_NONE;
  }
  gst_video_frame_unmap (&frame);
  gst_buffer_unref (buf);
  return took;
}

void
gst_resnet_backbone_redescribe (GstResnetBackbone * self, Model & model)
{
  std::string description;
  try {
    if (model.instance)
      model.instance->exclusive ([&description](backbone::Engine & e) { description = e.describe (); });
    else
      description = model.engine->describe ();
  } catch (const std::exception &e) {
    GST_WARNING_OBJECT (self, "describing the engine failed: %s", e.what ());
    return;
  }
  if (description == model.engine_description)
    return;
  model.engine_description = description;
  GST_INFO_OBJECT (self, "engine after the first frame of %dx%d: %s",
      GST_VIDEO_INFO_WIDTH (&self->priv->info), GST_VIDEO_INFO_HEIGHT (&self->priv->info),
      description.c_str ());
  /* precision=bf16 where this CPU runs it slower than fp32 (the engine measured both). */
  if (description.find ("measured slower than fp32") != std::string::npos)
    GST_WARNING_OBJECT (self, "precision bf16 runs slower than fp32 on this CPU (precision=auto would "
        "run fp32): %s", description.c_str ());
  GST_OBJECT_LOCK (self);
  self->priv->engine_description = description;
  GST_OBJECT_UNLOCK (self);
  g_object_notify (G_OBJECT (self), "engine-description");
}

/* Our latency now: the property, else the largest of the warm-up and the recent inferences. */
GstClockTime
gst_resnet_backbone_own_latency (GstResnetBackbone * self)
{
  GST_OBJECT_LOCK (self);
  const GstClockTime fixed = self->priv->settings.latency;
  /* A shared instance's frame may wait batch-timeout for others before its forward. */
  const GstClockTime batch_wait = self->priv->settings.model_instance_id.empty ()? 0 :
      self->priv->settings.batch_timeout;
  GST_OBJECT_UNLOCK (self);
  if (GST_CLOCK_TIME_IS_VALID (fixed))
    return fixed;
  std::lock_guard<std::mutex> guard (self->priv->lock);
  return self->priv->posted_latency + batch_wait;
}

/* Records a measured time; TRUE when the reported latency grew (by more than a quarter: not on
 * every frame's jitter) and a LATENCY message should be posted. */
gboolean
gst_resnet_backbone_record_latency (GstResnetBackbone * self, GstClockTime t, bool warm_up)
{
  GstResnetBackbonePrivate *priv = self->priv;
  std::lock_guard<std::mutex> guard (priv->lock);
  if (warm_up) {
    priv->warmup_latency = t;
  } else {
    priv->latencies.push_back (t);
    while (priv->latencies.size () > LATENCY_WINDOW)
      priv->latencies.pop_front ();
  }
  GstClockTime lat = GST_CLOCK_TIME_IS_VALID (priv->warmup_latency) ? priv->warmup_latency : 0;
  for (GstClockTime x : priv->latencies)
    lat = MAX (lat, x);
  if (lat > priv->posted_latency + priv->posted_latency / 4) {
    priv->posted_latency = lat;
    return TRUE;
  }
  return FALSE;
}

/* Runs the warm-up for @info unless one ran for this start: the latency is then known before the
 * first frame. Called with no lock held. */
void
gst_resnet_backbone_ensure_warm_up (GstResnetBackbone * self, const GstVideoInfo * info,
    gboolean post)
{
  GstResnetBackbonePrivate *priv = self->priv;
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    if (GST_CLOCK_TIME_IS_VALID (priv->warmup_latency))
      return;
  }
  GstClockTime took = GST_CLOCK_TIME_NONE;
  {
    std::lock_guard<std::mutex> engine_guard (priv->engine_lock);
    if (!priv->model)
      return;
    took = gst_resnet_backbone_warm_up (self, *priv->model, info);
    if (GST_CLOCK_TIME_IS_VALID (took) && priv->describe_pending) {
      priv->describe_pending = FALSE;
      gst_resnet_backbone_redescribe (self, *priv->model);
    }
  }
  if (GST_CLOCK_TIME_IS_VALID (took) && gst_resnet_backbone_record_latency (self, took, true) && post)
    gst_element_post_message (GST_ELEMENT (self), gst_message_new_latency (GST_OBJECT (self)));
}

GstStructure *
gst_resnet_backbone_stats_structure (GstResnetBackbone * self)
{
  GstResnetBackbonePrivate *priv = self->priv;
  std::lock_guard<std::mutex> guard (priv->lock);
  const Stats & st = priv->stats;
  const gstbackbone::FeaturePoolStats ps = priv->pool ? priv->pool->stats () : priv->pool_stats;
  const guint64 mean = st.inferred > 0 ? st.time_total / st.inferred : 0;
  return gst_structure_new ("resnetbackbone-stats",
      "frames", G_TYPE_UINT64, st.frames,
      "inferred", G_TYPE_UINT64, st.inferred,
      "skipped-interval", G_TYPE_UINT64, st.skipped_interval,
      "skipped-qos", G_TYPE_UINT64, st.skipped_qos,
      "skipped-pool", G_TYPE_UINT64, st.skipped_pool,
      "skipped-gap", G_TYPE_UINT64, st.skipped_gap,
      "errors", G_TYPE_UINT64, st.errors,
      "mean-inference-time", G_TYPE_UINT64, mean,
      "max-inference-time", G_TYPE_UINT64, (guint64) st.time_max,
      "feature-bytes-held", G_TYPE_UINT64, ps.bytes_in_use,
      "peak-feature-bytes", G_TYPE_UINT64, ps.peak_bytes,
      "pool-waits", G_TYPE_UINT64, ps.waits,
      "pool-timeouts", G_TYPE_UINT64, ps.timeouts,
      "batched-frames", G_TYPE_UINT64, st.batched_frames,
      "mean-batch-size", G_TYPE_DOUBLE, st.batched_frames > 0 ?
          (double) st.batch_size_total / (double) st.batched_frames : 0.0,
      "mean-batch-wait", G_TYPE_UINT64, st.batched_frames > 0 ?
          (guint64) (st.batch_wait_total / st.batched_frames) : (guint64) 0,
      "max-batch-wait", G_TYPE_UINT64, (guint64) st.batch_wait_max, nullptr);
}
