/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone's CUDA side: the GstCudaContext it shares with its CUDA neighbours, frames in CUDA
 * memory read in place, and levels left on the GPU as feature device memories. Everything here
 * compiles (as no-ops where it must) in builds without GStreamer's CUDA library.
 */
#ifndef __GST_RESNET_BACKBONE_CUDA_H__
#define __GST_RESNET_BACKBONE_CUDA_H__

#include <gst/gst.h>

#if BACKBONE_HAVE_GST_CUDA
#include <gst/cuda/gstcudacontext.h>
#endif

#include <memory>
#include <mutex>
#include <string>

#include "backbone/tensor.h"
#include "featurepool.h"

namespace gstbackbone {

/* Caps feature of frames in CUDA memory (GST_CAPS_FEATURE_MEMORY_CUDA_MEMORY of GStreamer's CUDA
 * library), spelt out so that builds without that library filter it too. */
#define CUDA_MEMORY_FEATURE "memory:CUDAMemory"
/* The formats the cuda engine takes in CUDA memory. */
#define BACKBONE_CUDA_VIDEO_FORMATS "{ NV12, I420, RGBA, BGRA, RGBx, BGRx }"

/* The CUDA context every CUDA call of the element runs in: GStreamer's GstCudaContext (shared with
 * upstream CUDA elements, so that their frames' device pointers are valid in it) when the plugin
 * is built with GStreamer's CUDA library and the engine is "cuda". Without one (a build without
 * that library) the CUDA module uses the device's primary context. Held by the model and by every
 * level left on the GPU (its download and its release run in the context). */
struct CudaContextHolder {
#if BACKBONE_HAVE_GST_CUDA
  GstCudaContext *context;

  explicit CudaContextHolder (GstCudaContext * c) : context ((GstCudaContext *) gst_object_ref (c)) {}
  ~CudaContextHolder () { gst_object_unref (context); }
  CudaContextHolder (const CudaContextHolder &) = delete;
  CudaContextHolder & operator= (const CudaContextHolder &) = delete;
#endif
};
using CudaContextPtr = std::shared_ptr<CudaContextHolder>;

/* Makes the context current on the calling thread for the scope (gst_cuda_context_push / pop);
 * nothing without one. Throws backbone::DeviceError when the push fails. */
class CudaContextScope {
 public:
  explicit CudaContextScope (const CudaContextPtr & holder);
  ~CudaContextScope ();
  CudaContextScope (const CudaContextScope &) = delete;
  CudaContextScope & operator= (const CudaContextScope &) = delete;

 private:
  bool pushed_ = false;
};

/* The element's shared CUDA context: set by neighbours (set_context), found or created at start,
 * answered to context queries. All members thread-safe. */
class CudaContextSharing {
 public:
  CudaContextSharing () = default;
  ~CudaContextSharing ();
  CudaContextSharing (const CudaContextSharing &) = delete;
  CudaContextSharing & operator= (const CudaContextSharing &) = delete;

  /* For an engine that wants CUDA (@want), on @device: GStreamer's CUDA library loaded and a
   * GstCudaContext of the device shared with the neighbours, in @cuda. @explicit_request: the
   * properties name CUDA (else device=auto found a GPU, and failures only warn). Leaves @cuda
   * empty when not wanted and in builds without GStreamer's CUDA library. FALSE (with an error
   * posted) when the properties ask for CUDA and it cannot be had. */
  gboolean open (GstElement * element, bool want, int device, bool explicit_request,
      const std::string & engine, const std::string & device_name, CudaContextPtr * cuda);
  /* Drops the context (stop, or a device=auto start that did not come to run on CUDA). */
  void clear ();
  /* GstElement::set_context: the device the properties name (0 for auto). */
  void set_context (GstElement * element, GstContext * context, int device);
  /* A CONTEXT query answered with our context; FALSE when not ours to answer. */
  gboolean handle_query (GstElement * element, GstQuery * query);

 private:
#if BACKBONE_HAVE_GST_CUDA
  /* Recursive: gst_cuda_ensure_element_context (called with it held) calls gst_element_set_context
   * on this element itself with the context it found by query or created, and its NEED_CONTEXT
   * message is answered the same way (by a bin holding a CUDA context or an application's sync
   * handler) on the posting thread: each re-enters set_context. */
  std::recursive_mutex lock_;
  GstCudaContext *context_ = nullptr;
#endif
};

/* References to the memories of a frame in CUDA memory, kept until the engine has read it. */
struct FrameMemories;

/* Whether @buf's memories are all CUDA memory of @cuda's context (frames the engine may read in
 * place); FALSE in builds without GStreamer's CUDA library. */
bool buffer_in_cuda_context (GstBuffer * buf, const CudaContextPtr & cuda);

/* The GstMapFlags that map such a frame's planes as device pointers (0 without CUDA). */
int cuda_map_flags ();

/* Holds @buf's memories until the levels made from the frame are complete. */
std::shared_ptr<FrameMemories> hold_frame_memories (GstBuffer * buf);

/* A level's data buffer: one feature device memory around a contiguous CUDA tensor, which it
 * keeps (with @slot, @cuda and @frame) until the last buffer holding it is gone. */
GstBuffer *wrap_device_level (const backbone::Tensor & tensor,
    const std::shared_ptr<FeatureSlot> & slot, const CudaContextPtr & cuda,
    const std::shared_ptr<FrameMemories> & frame);

}  /* namespace gstbackbone */

#endif /* __GST_RESNET_BACKBONE_CUDA_H__ */
