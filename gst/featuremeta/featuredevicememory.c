/* SPDX-License-Identifier: Apache-2.0
 *
 * GstFeatureDeviceMemory: feature data left in device memory, downloaded on demand, once.
 */

/**
 * SECTION:gstfeaturedevicememory
 * @title: GstFeatureDeviceMemory
 * @short_description: feature maps that stay in GPU memory
 *
 * A producer that computes its features on a GPU (resnetbackbone with engine=cuda) wraps each
 * level's device allocation in a feature device memory: the level's data buffer then holds one
 * read-only #GstMemory that knows the device pointer, the device and the event that marks the
 * data complete.
 *
 * A consumer on the GPU reads it without a copy:
 * |[<!-- language="C" -->
 *   gpointer dptr, event;
 *   if (gst_feature_level_get_device_pointer (res4, &dptr, &event)) {
 *     if (event)
 *       cuStreamWaitEvent (my_stream, (CUevent) event, 0);
 *     launch_my_kernel (my_stream, (const float *) dptr, res4->strides);
 *   }
 * ]|
 * keeping the buffer (or the level's data buffer) referenced until its stream is done with it.
 *
 * A consumer on the host maps the level as any other (gst_feature_level_map()): the first map
 * downloads the data into a host copy that the memory keeps, later maps return that copy.
 */

#include "featuredevicememory.h"

#include <string.h>

#define GST_CAT_DEFAULT gst_feature_device_memory_debug
GST_DEBUG_CATEGORY_STATIC (GST_CAT_DEFAULT);

typedef struct
{
  GstMemory mem;

  /* Set once at creation; a shared memory copies them from its root. */
  GstFeatureDevice device;
  gint device_id;
  guint8 *device_ptr;           /* first byte of the allocation (offset 0) */
  gpointer ready_event;

  /* Root memory only (mem.parent == NULL): the producer's side and the host copy. */
  GstFeatureDeviceMemoryFuncs funcs;
  gpointer user_data;
  GMutex lock;                  /* guards host */
  guint8 *host;                 /* maxsize bytes once downloaded, else NULL */
} GstFeatureDeviceMemory;

typedef struct
{
  GstAllocator parent;
} GstFeatureDeviceAllocator;

typedef struct
{
  GstAllocatorClass parent_class;
} GstFeatureDeviceAllocatorClass;

static GType gst_feature_device_allocator_get_type (void);
G_DEFINE_TYPE (GstFeatureDeviceAllocator, gst_feature_device_allocator, GST_TYPE_ALLOCATOR);

static GstAllocator *_feature_device_allocator = NULL;

static GstMemory *
gst_feature_device_allocator_alloc (GstAllocator * allocator, gsize size,
    GstAllocationParams * params)
{
  g_critical ("%s: feature device memory wraps an existing device allocation: use "
      "gst_feature_device_memory_new(), not gst_allocator_alloc()", G_STRFUNC);
  return NULL;
}

static void
gst_feature_device_allocator_free (GstAllocator * allocator, GstMemory * memory)
{
  GstFeatureDeviceMemory *mem = (GstFeatureDeviceMemory *) memory;

  if (memory->parent == NULL) {
    GST_LOG ("freeing feature device memory %p (device pointer %p, %" G_GSIZE_FORMAT
        " bytes, %s)", mem, mem->device_ptr, memory->maxsize,
        mem->host ? "downloaded" : "never downloaded");
    if (mem->funcs.free)
      mem->funcs.free (mem->user_data);
    g_free (mem->host);
    g_mutex_clear (&mem->lock);
  }
  g_free (mem);
}

static GstFeatureDeviceMemory *
root_of (GstMemory * memory)
{
  return (GstFeatureDeviceMemory *) (memory->parent ? memory->parent : memory);
}

static gpointer
gst_feature_device_mem_map (GstMemory * memory, gsize maxsize, GstMapFlags flags)
{
  GstFeatureDeviceMemory *root = root_of (memory);
  GError *error = NULL;
  guint8 *host;

  if (flags & GST_MAP_WRITE) {
    GST_WARNING ("feature device memory %p is read-only (shared by every buffer that holds it): "
        "map flags 0x%x refused (expected GST_MAP_READ without GST_MAP_WRITE)", memory, flags);
    return NULL;
  }

  g_mutex_lock (&root->lock);
  if (root->host == NULL) {
    const gsize size = root->mem.maxsize;
    host = g_try_malloc (size);
    if (host == NULL) {
      g_mutex_unlock (&root->lock);
      GST_ERROR ("feature device memory %p: cannot allocate %" G_GSIZE_FORMAT " bytes of host "
          "memory for the download", memory, size);
      return NULL;
    }
    if (!root->funcs.download (root->user_data, host, size, &error)) {
      g_mutex_unlock (&root->lock);
      GST_ERROR ("feature device memory %p: downloading %" G_GSIZE_FORMAT " bytes from device "
          "pointer %p of device %d failed: %s", memory, size, root->device_ptr, root->device_id,
          error ? error->message : "(the download callback gave no reason)");
      g_clear_error (&error);
      g_free (host);
      return NULL;
    }
    g_clear_error (&error);     /* a callback that set an error and returned TRUE */
    GST_DEBUG ("feature device memory %p: downloaded %" G_GSIZE_FORMAT " bytes from device "
        "pointer %p of device %d", memory, size, root->device_ptr, root->device_id);
    root->host = host;
  }
  host = root->host;
  g_mutex_unlock (&root->lock);
  return host;
}

static void
gst_feature_device_mem_unmap (GstMemory * memory)
{
  /* The host copy stays for later maps until the memory is freed. */
}

static GstFeatureDeviceMemory *
feature_device_memory_alloc (GstMemory * parent, GstMemoryFlags flags, gsize maxsize,
    gsize offset, gsize size)
{
  GstFeatureDeviceMemory *mem = g_new0 (GstFeatureDeviceMemory, 1);

  gst_memory_init (GST_MEMORY_CAST (mem), flags, _feature_device_allocator, parent, maxsize, 0,
      offset, size);
  return mem;
}

static GstMemory *
gst_feature_device_mem_share (GstMemory * memory, gssize offset, gssize size)
{
  GstFeatureDeviceMemory *mem = (GstFeatureDeviceMemory *) memory;
  GstFeatureDeviceMemory *root = root_of (memory);
  GstFeatureDeviceMemory *sub;

  if (size == -1)
    size = memory->size > (gsize) offset ? memory->size - offset : 0;

  /* Shared from the root, so that the host copy and the release stay with one memory. */
  sub = feature_device_memory_alloc (GST_MEMORY_CAST (root),
      (GstMemoryFlags) (GST_MINI_OBJECT_FLAGS (root) | GST_MINI_OBJECT_FLAG_LOCK_READONLY |
          GST_MEMORY_FLAG_READONLY), memory->maxsize, memory->offset + offset, size);
  sub->device = mem->device;
  sub->device_id = mem->device_id;
  sub->device_ptr = mem->device_ptr;
  sub->ready_event = mem->ready_event;
  return GST_MEMORY_CAST (sub);
}

static GstMemory *
gst_feature_device_mem_copy (GstMemory * memory, gssize offset, gssize size)
{
  GstMemory *copy;
  GstMapInfo in, out;

  if (size == -1)
    size = memory->size > (gsize) offset ? memory->size - offset : 0;

  /* A copy is host data: the device allocation belongs to the producer. */
  if (!gst_memory_map (memory, &in, GST_MAP_READ))
    return NULL;
  if (offset < 0 || (gsize) offset > in.size || (gsize) size > in.size - offset) {
    GST_WARNING ("copy of %" G_GSSIZE_FORMAT " bytes at offset %" G_GSSIZE_FORMAT " of a feature "
        "device memory of %" G_GSIZE_FORMAT " bytes: out of range", size, offset, in.size);
    gst_memory_unmap (memory, &in);
    return NULL;
  }
  copy = gst_allocator_alloc (NULL, size, NULL);
  if (copy == NULL || !gst_memory_map (copy, &out, GST_MAP_WRITE)) {
    if (copy)
      gst_memory_unref (copy);
    gst_memory_unmap (memory, &in);
    return NULL;
  }
  memcpy (out.data, in.data + offset, size);
  gst_memory_unmap (copy, &out);
  gst_memory_unmap (memory, &in);
  return copy;
}

static gboolean
gst_feature_device_mem_is_span (GstMemory * mem1, GstMemory * mem2, gsize * offset)
{
  /* Both are shared from the same root (gst_memory_is_span checked the parents). */
  if (offset)
    *offset = mem1->offset - mem1->parent->offset;
  return mem1->offset + mem1->size == mem2->offset;
}

static void
gst_feature_device_allocator_class_init (GstFeatureDeviceAllocatorClass * klass)
{
  GstAllocatorClass *allocator_class = GST_ALLOCATOR_CLASS (klass);

  allocator_class->alloc = gst_feature_device_allocator_alloc;
  allocator_class->free = gst_feature_device_allocator_free;
}

static void
gst_feature_device_allocator_init (GstFeatureDeviceAllocator * self)
{
  GstAllocator *alloc = GST_ALLOCATOR_CAST (self);

  alloc->mem_type = GST_FEATURE_DEVICE_MEMORY_TYPE_NAME;
  alloc->mem_map = gst_feature_device_mem_map;
  alloc->mem_unmap = gst_feature_device_mem_unmap;
  alloc->mem_share = gst_feature_device_mem_share;
  alloc->mem_copy = gst_feature_device_mem_copy;
  alloc->mem_is_span = gst_feature_device_mem_is_span;
  GST_OBJECT_FLAG_SET (self, GST_ALLOCATOR_FLAG_CUSTOM_ALLOC);
}

static void
ensure_allocator (void)
{
  static gsize done = 0;

  if (g_once_init_enter (&done)) {
    GST_DEBUG_CATEGORY_INIT (gst_feature_device_memory_debug, "featuredevicememory", 0,
        "GstFeatureDeviceMemory");
    _feature_device_allocator = g_object_new (gst_feature_device_allocator_get_type (), NULL);
    gst_object_ref_sink (_feature_device_allocator);
    /* One for the life of the process, as GStreamer's own allocators. */
    GST_OBJECT_FLAG_SET (_feature_device_allocator, GST_OBJECT_FLAG_MAY_BE_LEAKED);
    g_once_init_leave (&done, 1);
  }
}

GstMemory *
gst_feature_device_memory_new (GstFeatureDevice device, gint device_id, gpointer device_ptr,
    gsize size, gpointer ready_event, const GstFeatureDeviceMemoryFuncs * funcs,
    gpointer user_data)
{
  GstFeatureDeviceMemory *mem;

  if (device != GST_FEATURE_DEVICE_CUDA || device_id < 0 || device_ptr == NULL || size == 0
      || funcs == NULL || funcs->download == NULL) {
    g_critical ("%s: expected device CUDA (%d), device_id >= 0, a device pointer, a size > 0 and "
        "a download function; found device %d, device_id %d, pointer %p, size %" G_GSIZE_FORMAT
        ", %s", G_STRFUNC, GST_FEATURE_DEVICE_CUDA, device, device_id, device_ptr, size,
        funcs == NULL ? "no funcs" : funcs->download == NULL ? "no download function" :
        "a download function");
    if (funcs && funcs->free)
      funcs->free (user_data);
    return NULL;
  }

  ensure_allocator ();
  mem = feature_device_memory_alloc (NULL, GST_MEMORY_FLAG_READONLY, size, 0, size);
  mem->device = device;
  mem->device_id = device_id;
  mem->device_ptr = device_ptr;
  mem->ready_event = ready_event;
  mem->funcs = *funcs;
  mem->user_data = user_data;
  g_mutex_init (&mem->lock);
  mem->host = NULL;
  GST_LOG ("new feature device memory %p: device %d, pointer %p, %" G_GSIZE_FORMAT " bytes, "
      "ready event %p", mem, device_id, device_ptr, size, ready_event);
  return GST_MEMORY_CAST (mem);
}

gboolean
gst_is_feature_device_memory (GstMemory * mem)
{
  return mem != NULL && mem->allocator != NULL && _feature_device_allocator != NULL &&
      mem->allocator == _feature_device_allocator;
}

GstFeatureDevice
gst_feature_device_memory_get_device (GstMemory * mem)
{
  g_return_val_if_fail (gst_is_feature_device_memory (mem), GST_FEATURE_DEVICE_CPU);

  return ((GstFeatureDeviceMemory *) mem)->device;
}

gint
gst_feature_device_memory_get_device_id (GstMemory * mem)
{
  g_return_val_if_fail (gst_is_feature_device_memory (mem), -1);

  return ((GstFeatureDeviceMemory *) mem)->device_id;
}

gpointer
gst_feature_device_memory_get_device_pointer (GstMemory * mem)
{
  g_return_val_if_fail (gst_is_feature_device_memory (mem), NULL);

  return ((GstFeatureDeviceMemory *) mem)->device_ptr + mem->offset;
}

gpointer
gst_feature_device_memory_get_ready_event (GstMemory * mem)
{
  g_return_val_if_fail (gst_is_feature_device_memory (mem), NULL);

  return ((GstFeatureDeviceMemory *) mem)->ready_event;
}

gboolean
gst_feature_level_get_device_pointer (const GstFeatureLevel * level, gpointer * device_ptr,
    gpointer * ready_event)
{
  GstMemory *mem;
  gboolean ok;

  g_return_val_if_fail (level != NULL, FALSE);
  g_return_val_if_fail (GST_IS_BUFFER (level->data), FALSE);

  if (level->device == GST_FEATURE_DEVICE_CPU || gst_buffer_n_memory (level->data) != 1)
    return FALSE;
  mem = gst_buffer_peek_memory (level->data, 0);
  ok = gst_is_feature_device_memory (mem);
  if (ok) {
    if (device_ptr)
      *device_ptr = (guint8 *) gst_feature_device_memory_get_device_pointer (mem) + level->offset;
    if (ready_event)
      *ready_event = gst_feature_device_memory_get_ready_event (mem);
  }
  return ok;
}
