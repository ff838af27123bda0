/* SPDX-License-Identifier: Apache-2.0
 *
 * GstFeatureDeviceMemory: a GstMemory whose data stays in device (GPU) memory, for the levels of a
 * #GstFeatureMeta that a producer leaves on the GPU. GStreamer alone: no CUDA header. The producer
 * supplies the device pointer, the event that marks the data complete, and two callbacks: one that
 * copies the data to the host, one that releases the device allocation.
 *
 * A consumer that reads the device pointer asynchronously (kernels queued on its own stream after
 * waiting on the ready event) keeps a reference to the buffer or the memory until those reads
 * have completed (e.g. until it synchronises its stream or an event of its own): once the last
 * reference is gone the producer may reuse the allocation for a later frame.
 */
#ifndef __GST_FEATURE_DEVICE_MEMORY_H__
#define __GST_FEATURE_DEVICE_MEMORY_H__

#include <gst/gst.h>
#include <gst/featuremeta/featuremeta.h>

G_BEGIN_DECLS

/**
 * GST_FEATURE_DEVICE_MEMORY_TYPE_NAME:
 *
 * The memory type (#GstAllocator.mem_type) of feature device memories:
 * "GstFeatureDeviceMemory".
 */
#define GST_FEATURE_DEVICE_MEMORY_TYPE_NAME "GstFeatureDeviceMemory"

/**
 * GstFeatureDeviceMemoryDownloadFunc:
 * @user_data: the producer's data given to gst_feature_device_memory_new()
 * @dest: host memory of @size bytes to fill
 * @size: number of bytes to copy: the memory's whole allocation, from the device pointer on
 * @error: (out) (optional): where to say what failed
 *
 * Copies the device data to the host. It must wait for the memory's ready event first (the
 * data may still be being computed) and makes whatever device context current that the copy
 * needs. Succeeds at most once per allocation (see gst_feature_device_memory_new()): called by
 * the first gst_memory_map() for reading, on that map's thread (any thread), and again by the
 * next map only after a call that failed; never by two threads at once.
 *
 * Returns: TRUE when @dest holds the data; FALSE, with @error set, when the copy failed.
 */
typedef gboolean (*GstFeatureDeviceMemoryDownloadFunc) (gpointer user_data, gpointer dest,
    gsize size, GError ** error);

/**
 * GstFeatureDeviceMemoryFreeFunc:
 * @user_data: the producer's data given to gst_feature_device_memory_new()
 *
 * Releases the device allocation (and @user_data). Called exactly once, when the last reference
 * to the memory and to every memory shared from it is gone, from any thread.
 */
typedef void (*GstFeatureDeviceMemoryFreeFunc) (gpointer user_data);

/**
 * GstFeatureDeviceMemoryFuncs:
 * @download: copies the data to the host; required
 * @free: releases the device allocation; may be NULL when nothing needs releasing
 *
 * The producer's side of a feature device memory. Copied by gst_feature_device_memory_new(): the
 * caller may keep it on its stack. Zero the whole struct before filling it in (the reserved
 * fields must be NULL).
 */
typedef struct {
  GstFeatureDeviceMemoryDownloadFunc download;
  GstFeatureDeviceMemoryFreeFunc free;

  /*< private >*/
  gpointer _gst_reserved[GST_PADDING];
} GstFeatureDeviceMemoryFuncs;

/**
 * gst_feature_device_memory_new: (skip)
 * @device: where the data lives; #GST_FEATURE_DEVICE_CUDA (not #GST_FEATURE_DEVICE_CPU)
 * @device_id: the N of cuda:N, at least 0
 * @device_ptr: device address of the first byte (a CUdeviceptr / CUDA runtime pointer)
 * @size: size of the allocation in bytes, at least 1
 * @ready_event: (nullable): the event (a CUevent / cudaEvent_t) recorded once the data is
 *   complete, valid while the memory lives; NULL when the data is complete already
 * @funcs: the producer's callbacks (copied)
 * @user_data: passed to the callbacks; released by @funcs->free
 *
 * Wraps a device allocation in a read-only #GstMemory.
 *
 * A downstream element on the same device gets the pointer with
 * gst_feature_device_memory_get_device_pointer() (or gst_feature_level_get_device_pointer() for a
 * level) and makes its own stream wait for gst_feature_device_memory_get_ready_event()
 * (cuStreamWaitEvent / cudaStreamWaitEvent) before reading: no copy, no host synchronisation.
 *
 * Mapping the memory for reading (gst_memory_map(), gst_buffer_map(), gst_feature_level_map())
 * copies the data to the host on demand, once: the first map calls @funcs->download into a host
 * copy that the memory keeps; every later map, from any thread and of any memory shared from this
 * one, returns that copy. Concurrent first maps wait for the one download. A failed download
 * fails that map (logged with the error) and is tried again by the next one. Mapping for writing
 * is refused: the data is shared by every buffer that holds the memory (gst_buffer_map() for
 * writing on a writable buffer then replaces the memory by a host copy, as it does for every
 * read-only memory; gst_feature_level_map() never maps for writing). gst_memory_share() shares
 * the device allocation (and the host copy) with the new memory; gst_memory_copy() makes a
 * system memory from the host copy.
 *
 * @user_data is released with @funcs->free when the memory and every memory shared from it are
 * gone, also when this call fails.
 *
 * For C producers only: language bindings cannot fill in @funcs.
 *
 * Returns: (transfer full) (nullable): the memory, or NULL with a critical warning when an
 * argument is invalid (a CPU device, a negative @device_id, a NULL @device_ptr, a @size of 0, or
 * no @funcs->download).
 */
GST_FEATURE_META_API GstMemory *gst_feature_device_memory_new (GstFeatureDevice device,
    gint device_id, gpointer device_ptr, gsize size, gpointer ready_event,
    const GstFeatureDeviceMemoryFuncs * funcs, gpointer user_data);

/**
 * gst_is_feature_device_memory:
 * @mem: (nullable): a #GstMemory
 *
 * Returns: TRUE when @mem is a feature device memory (or a memory shared from one).
 */
GST_FEATURE_META_API gboolean gst_is_feature_device_memory (GstMemory * mem);

/**
 * gst_feature_device_memory_get_device:
 * @mem: a feature device memory
 *
 * Returns: the device the data lives on (#GST_FEATURE_DEVICE_CUDA).
 */
GST_FEATURE_META_API GstFeatureDevice gst_feature_device_memory_get_device (GstMemory * mem);

/**
 * gst_feature_device_memory_get_device_id:
 * @mem: a feature device memory
 *
 * Returns: the N of cuda:N, or -1 when @mem is not a feature device memory.
 */
GST_FEATURE_META_API gint gst_feature_device_memory_get_device_id (GstMemory * mem);

/**
 * gst_feature_device_memory_get_device_pointer:
 * @mem: a feature device memory
 *
 * Returns: (transfer none) (nullable): the device address of the first byte of @mem (its offset
 * applied: a memory shared with an offset points further into the allocation), valid while @mem
 * lives; NULL when @mem is not a feature device memory.
 */
GST_FEATURE_META_API gpointer gst_feature_device_memory_get_device_pointer (GstMemory * mem);

/**
 * gst_feature_device_memory_get_ready_event:
 * @mem: a feature device memory
 *
 * Returns: (transfer none) (nullable): the event (CUevent / cudaEvent_t) recorded when the data
 * is complete, valid while @mem lives, or NULL when there is none (the data is complete) or @mem
 * is not a feature device memory. A consumer's stream waits on it (cuStreamWaitEvent).
 */
GST_FEATURE_META_API gpointer gst_feature_device_memory_get_ready_event (GstMemory * mem);

/**
 * gst_feature_level_get_device_pointer:
 * @level: a #GstFeatureLevel
 * @device_ptr: (out) (optional): the device address of element (0, 0, 0, 0) of @level (the
 *   memory's and the level's offsets applied)
 * @ready_event: (out) (optional) (nullable): the event to wait on before reading, or NULL when
 *   none is needed
 *
 * The zero-copy way to a level that lives on a device: valid while the level's data buffer is
 * held (the #GstFeatureMeta, or a reference to @level->data). Element (n, c, h, w) is at
 * `n * strides[0] + c * strides[1] + h * strides[2] + w * strides[3]` elements from @device_ptr.
 *
 * Returns: TRUE when the level's data is one feature device memory; FALSE (outputs untouched)
 * for a level in host memory, which gst_feature_level_map() reads.
 */
GST_FEATURE_META_API gboolean gst_feature_level_get_device_pointer (const GstFeatureLevel * level,
    gpointer * device_ptr, gpointer * ready_event);

G_END_DECLS

#endif /* __GST_FEATURE_DEVICE_MEMORY_H__ */
