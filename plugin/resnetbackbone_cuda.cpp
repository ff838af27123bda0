/* SPDX-License-Identifier: Apache-2.0 */
#include "resnetbackbone_cuda.h"

#include <gst/featuremeta/featuredevicememory.h>

#if BACKBONE_HAVE_GST_CUDA
#include <gst/cuda/gstcudaloader.h>
#include <gst/cuda/gstcudamemory.h>
#include <gst/cuda/gstcudautils.h>
#endif

#include <cstring>
#include <vector>

#include "backbone/engine.h"
#include "backbone/error.h"

GST_DEBUG_CATEGORY_EXTERN (gst_resnet_backbone_debug);
#define GST_CAT_DEFAULT gst_resnet_backbone_debug

namespace gstbackbone {

CudaContextScope::CudaContextScope (const CudaContextPtr & holder)
{
#if BACKBONE_HAVE_GST_CUDA
  if (holder) {
    if (!gst_cuda_context_push (holder->context))
      throw backbone::DeviceError ("gst_cuda_context_push failed: cannot make GStreamer's CUDA "
          "context current on this thread");
    pushed_ = true;
  }
#else
  (void) holder;
#endif
}

CudaContextScope::~CudaContextScope ()
{
#if BACKBONE_HAVE_GST_CUDA
  if (pushed_)
    gst_cuda_context_pop (nullptr);
#endif
}

CudaContextSharing::~CudaContextSharing ()
{
  clear ();
}

gboolean
CudaContextSharing::open (GstElement * element, bool want, int device, bool explicit_request,
    const std::string & engine, const std::string & device_name, CudaContextPtr * cuda)
{
  cuda->reset ();
  if (!want)
    return TRUE;
#if BACKBONE_HAVE_GST_CUDA
  if (!gst_cuda_load_library ()) {
    if (!explicit_request) {
      GST_WARNING_OBJECT (element, "device=auto: GStreamer's CUDA library cannot load the CUDA "
          "driver (libcuda.so.1); no CUDA context shared with other elements");
      return TRUE;
    }
    GST_ELEMENT_ERROR (element, RESOURCE, FAILED,
        ("engine \"%s\" on cuda:%d needs the NVIDIA driver's CUDA library (libcuda.so.1), which "
            "GStreamer's CUDA library could not load: no usable NVIDIA driver or GPU on this "
            "machine", engine.c_str (), device),
        ("gst_cuda_load_library() failed (engine=%s device=%s)", engine.c_str (),
            device_name.c_str ()));
    return FALSE;
  }
  std::lock_guard<std::recursive_mutex> guard (lock_);
  if (context_) {
    /* A context set by a neighbour (set_context) for another device is not ours. */
    guint ctx_device = 0;
    g_object_get (context_, "cuda-device-id", &ctx_device, nullptr);
    if ((int) ctx_device != device) {
      GST_INFO_OBJECT (element, "dropping the CUDA context of device %u: the engine runs on "
          "cuda:%d", ctx_device, device);
      gst_clear_object (&context_);
    }
  }
  if (!gst_cuda_ensure_element_context (element, device, &context_)) {
    if (!explicit_request) {
      GST_WARNING_OBJECT (element, "device=auto: no CUDA context for cuda:%d", device);
      return TRUE;
    }
    GST_ELEMENT_ERROR (element, RESOURCE, FAILED,
        ("engine \"%s\" on cuda:%d: cannot create or share a CUDA context on that device",
            engine.c_str (), device),
        ("gst_cuda_ensure_element_context() failed for device %d", device));
    return FALSE;
  }
  *cuda = std::make_shared<CudaContextHolder> (context_);
  GST_INFO_OBJECT (element, "CUDA context %" GST_PTR_FORMAT " for cuda:%d", context_, device);
#else
  (void) explicit_request;
  (void) engine;
  (void) device_name;
  GST_DEBUG_OBJECT (element, "engine on cuda:%d: this build has no GStreamer CUDA library, so the "
      "engine takes frames in system memory only, in the CUDA module's own context", device);
#endif
  return TRUE;
}

void
CudaContextSharing::clear ()
{
#if BACKBONE_HAVE_GST_CUDA
  std::lock_guard<std::recursive_mutex> guard (lock_);
  gst_clear_object (&context_);
#endif
}

void
CudaContextSharing::set_context (GstElement * element, GstContext * context, int device)
{
#if BACKBONE_HAVE_GST_CUDA
  std::lock_guard<std::recursive_mutex> guard (lock_);
  gst_cuda_handle_set_context (element, context, device, &context_);
#else
  (void) element;
  (void) context;
  (void) device;
#endif
}

gboolean
CudaContextSharing::handle_query (GstElement * element, GstQuery * query)
{
#if BACKBONE_HAVE_GST_CUDA
  if (GST_QUERY_TYPE (query) != GST_QUERY_CONTEXT)
    return FALSE;
  GstCudaContext *context = nullptr;
  {
    std::lock_guard<std::recursive_mutex> guard (lock_);
    if (context_)
      context = (GstCudaContext *) gst_object_ref (context_);
  }
  const gboolean handled = context != nullptr &&
      gst_cuda_handle_context_query (element, query, context);
  gst_clear_object (&context);
  return handled;
#else
  (void) element;
  (void) query;
  return FALSE;
#endif
}

bool
buffer_in_cuda_context (GstBuffer * buf, const CudaContextPtr & cuda)
{
#if BACKBONE_HAVE_GST_CUDA
  if (!cuda)
    return false;
  const guint n = gst_buffer_n_memory (buf);
  bool ours = n > 0;
  for (guint i = 0; i < n && ours; ++i) {
    GstMemory *mem = gst_buffer_peek_memory (buf, i);
    ours = gst_is_cuda_memory (mem) && GST_CUDA_MEMORY_CAST (mem)->context == cuda->context;
  }
  return ours;
#else
  (void) buf;
  (void) cuda;
  return false;
#endif
}

int
cuda_map_flags ()
{
#if BACKBONE_HAVE_GST_CUDA
  return GST_MAP_CUDA;          /* device plane pointers, no download */
#else
  return 0;
#endif
}

/* References to the memories of a frame in CUDA memory. The engine reads the frame on its own
 * stream after forward_frame returns; while these are held the memory does not go back to the
 * upstream pool, so the next frame is not written into it before the engine has read it. A pool
 * reuses a returned buffer whose memories are all writable, and a plain reference leaves a memory
 * writable (only the lock state counts): each memory is also locked exclusively, which makes it
 * shared (not writable), so the pool drops that buffer instead of reusing its memory. */
struct FrameMemories {
  std::vector<GstMemory *> memories;

  explicit FrameMemories (GstBuffer * buf) {
    for (guint i = 0; i < gst_buffer_n_memory (buf); ++i) {
      GstMemory *m = gst_memory_ref (gst_buffer_peek_memory (buf, i));
      gst_memory_lock (m, GST_LOCK_FLAG_EXCLUSIVE);
      memories.push_back (m);
    }
  }
  ~FrameMemories () {
    for (GstMemory * m : memories) {
      gst_memory_unlock (m, GST_LOCK_FLAG_EXCLUSIVE);
      gst_memory_unref (m);
    }
  }
  FrameMemories (const FrameMemories &) = delete;
  FrameMemories & operator= (const FrameMemories &) = delete;
};

std::shared_ptr<FrameMemories>
hold_frame_memories (GstBuffer * buf)
{
  return std::make_shared<FrameMemories> (buf);
}

namespace {

/* What a level left on the GPU holds: the engine's output tensor (its pooled storage is not
 * reused while held), the output slot, the CUDA context its download and release run in, and,
 * for a frame in CUDA memory, that frame's memories until the level is complete. */
struct DeviceLevel {
  backbone::Tensor tensor;
  std::shared_ptr<FeatureSlot> slot;
  CudaContextPtr cuda;
  std::shared_ptr<FrameMemories> frame;
};

/* GstFeatureDeviceMemoryFuncs.download: waits for the tensor's ready event and copies it into
 * @dest, in the context. Never throws (a C callback). */
gboolean
device_level_download (gpointer user_data, gpointer dest, gsize size, GError ** error)
{
  auto *level = static_cast<DeviceLevel *> (user_data);
  try {
    if (size != level->tensor.nbytes ())
      throw backbone::Error ("asked for " + std::to_string (size) + " bytes, the level holds " +
          std::to_string (level->tensor.nbytes ()));
    CudaContextScope scope (level->cuda);
    backbone::cuda_wait_ready (level->tensor);
    backbone::Tensor host = backbone::Tensor::from_blob (dest, level->tensor.shape (),
        level->tensor.dtype (), backbone::Device::cpu ());
    host.copy_ (level->tensor);
    return TRUE;
  } catch (const std::exception &e) {
    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ,
        "resnetbackbone: copying a feature level %s from %s to the host failed: %s",
        backbone::shape_str (level->tensor.shape ()).c_str (),
        level->tensor.device ().str ().c_str (), e.what ());
  } catch (...) {
    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ,
        "resnetbackbone: copying a feature level to the host failed: unknown exception");
  }
  return FALSE;
}

/* GstFeatureDeviceMemoryFuncs.free: the tensor (back to the engine's pool, or freed) in the
 * context. Never throws. */
void
device_level_free (gpointer user_data)
{
  auto *level = static_cast<DeviceLevel *> (user_data);
  try {
    CudaContextScope scope (level->cuda);
    /* The level complete means the engine has read the frame: only then may its memory go back
     * upstream (normally long done; the event has completed). */
    if (level->frame)
      backbone::cuda_wait_ready (level->tensor);
    level->frame.reset ();
    level->tensor = backbone::Tensor ();
    level->slot.reset ();
  } catch (const std::exception &e) {
    GST_WARNING ("releasing a feature level: %s; releasing it without the context", e.what ());
  } catch (...) {
  }
  delete level;
}

}  /* namespace */

GstBuffer *
wrap_device_level (const backbone::Tensor & tensor, const std::shared_ptr<FeatureSlot> & slot,
    const CudaContextPtr & cuda, const std::shared_ptr<FrameMemories> & frame)
{
  static const GstFeatureDeviceMemoryFuncs funcs = [] {
    GstFeatureDeviceMemoryFuncs f;
    memset (&f, 0, sizeof (f));
    f.download = device_level_download;
    f.free = device_level_free;
    return f;
  }();
  if (!tensor.is_contiguous () || tensor.nbytes () == 0)
    throw backbone::Error ("a CUDA output must be a contiguous, non-empty tensor, found " +
        backbone::shape_str (tensor.shape ()) + " with strides " +
        backbone::shape_str (tensor.strides ()));
  auto *level = new DeviceLevel {tensor, slot, cuda, frame};
  GstMemory *mem = gst_feature_device_memory_new (GST_FEATURE_DEVICE_CUDA,
      tensor.device ().index, const_cast<void *> (level->tensor.data ()), tensor.nbytes (),
      backbone::cuda_ready_event (tensor), &funcs, level);
  if (!mem)                     /* level already released by the call */
    throw backbone::Error ("gst_feature_device_memory_new refused a CUDA output " +
        backbone::shape_str (tensor.shape ()));
  GstBuffer *buf = gst_buffer_new ();
  gst_buffer_append_memory (buf, mem);
  return buf;
}

}  /* namespace gstbackbone */
