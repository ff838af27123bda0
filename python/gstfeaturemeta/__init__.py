# SPDX-License-Identifier: Apache-2.0
"""Read the backbone feature maps (GstFeatureMeta) of GStreamer buffers as numpy arrays.

Two lines give every level of a buffer (in a pad probe, from an appsink sample, ...)::

    import gstfeaturemeta
    feats = gstfeaturemeta.levels(buffer)   # {"res2": ndarray [1, 256, H/4, W/4] float32, ...}

- ``levels(buffer)``: a copy of each level, a C-contiguous ``numpy.ndarray`` of shape
  [N, C, H, W] in float32 (float16 and bfloat16 levels converted exactly), or in float16 with
  ``dtype="float16"`` (float16 levels kept as they are).
- ``mapped(buffer)``: a context manager giving read-only views of the levels' own memory, no
  copy: float32, float16, and bfloat16 as a uint16 view (numpy has no bfloat16).
- ``meta(buffer)``: a ``Meta`` with the frame geometry, unique-id, model name, the levels'
  descriptions and the conversions between frame pixels and feature cells.

Levels of the cuda engine live in GPU memory: mapping them (``mapped``, ``levels``) downloads
them to the host once, as ``gst_feature_level_map()`` does in C; ``Level.device_pointer`` gives
the device address without a copy.

Built on the GstFeatureMeta-1.0 typelib (GObject introspection of libgstfeaturemeta-1.0),
PyGObject, gst-python (python3-gst-1.0) and numpy.
"""

import atexit
import contextlib
import dataclasses
import sys
from typing import Dict, Optional, Tuple

import gi

try:
    gi.require_version("Gst", "1.0")
    gi.require_version("GstFeatureMeta", "1.0")
except ValueError as e:
    raise ImportError(
        "gstfeaturemeta needs the GObject introspection data of the meta library, "
        "GstFeatureMeta-1.0.typelib (Debian package gir1.2-gstfeaturemeta-1.0; from a build tree "
        "set GI_TYPELIB_PATH=<build>/lib/girepository-1.0 and LD_LIBRARY_PATH=<build>/lib): "
        f"{e}") from e
from gi.repository import Gst, GstFeatureMeta  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["Level", "Meta", "meta", "levels", "mapped"]

_NUMPY_DTYPES = {
    GstFeatureMeta.FeatureDType.FLOAT32: np.dtype(np.float32),
    GstFeatureMeta.FeatureDType.FLOAT16: np.dtype(np.float16),
    # numpy has no bfloat16: the bit patterns, as uint16.
    GstFeatureMeta.FeatureDType.BFLOAT16: np.dtype(np.uint16),
}


@dataclasses.dataclass(frozen=True)
class Level:
    """Description of one feature map of a meta (what GstFeatureLevel holds, without the data).

    ``strides`` are in elements; element (n, c, h, w) is at
    ``offset + (n * strides[0] + c * strides[1] + h * strides[2] + w * strides[3]) * itemsize``
    bytes of the level's data buffer. ``stride`` is the level's stride in network-input pixels.
    ``device_pointer`` and ``ready_event`` (addresses, for CUDA consumers such as CuPy) are set
    for a level left in GPU memory, None on the CPU.
    """

    name: str
    dtype: str
    shape: Tuple[int, int, int, int]
    strides: Tuple[int, int, int, int]
    stride: int
    device: str
    device_id: int
    offset: int
    device_pointer: Optional[int] = None
    ready_event: Optional[int] = None


class Meta:
    """The GstFeatureMeta of a buffer: geometry, producer and levels.

    Holds a reference to the buffer, which keeps the meta unchanged and alive (a buffer referenced
    twice is not writable, so no element can remove or change its metas). Attributes:
    ``unique_id``, ``model_name``, ``version``, ``frame_width``, ``frame_height`` (the frame the
    meta describes), ``input_width``, ``input_height`` (network input after resizing, before
    padding), ``padded_width``, ``padded_height``, ``scale_x``, ``scale_y`` (network-input pixels
    per frame pixel) and ``levels`` (a dict from level name to ``Level``, in the producer's
    out-features order).
    """

    def __init__(self, buffer: Gst.Buffer, fmeta):
        self._buffer = buffer
        self._fmeta = fmeta
        self.unique_id: int = fmeta.unique_id
        self.model_name: Optional[str] = fmeta.get_model_name()
        self.version: int = fmeta.version
        self.frame_width: int = fmeta.frame_width
        self.frame_height: int = fmeta.frame_height
        self.input_width: int = fmeta.input_width
        self.input_height: int = fmeta.input_height
        self.padded_width: int = fmeta.padded_width
        self.padded_height: int = fmeta.padded_height
        self.scale_x: float = fmeta.scale_x
        self.scale_y: float = fmeta.scale_y
        self._gi_levels = {}
        self.levels: Dict[str, Level] = {}
        for i in range(fmeta.get_n_levels()):
            lv = fmeta.get_level_by_index(i)
            name = lv.get_name()
            on_device, dptr, event = lv.get_device_pointer()
            self._gi_levels[name] = lv
            self.levels[name] = Level(
                name=name,
                dtype=GstFeatureMeta.feature_dtype_to_string(lv.get_dtype()),
                shape=tuple(lv.get_dims()),
                strides=tuple(lv.get_strides()),
                stride=lv.get_stride(),
                device="cuda" if lv.get_device() == GstFeatureMeta.FeatureDevice.CUDA else "cpu",
                device_id=lv.get_device_id(),
                offset=lv.get_offset(),
                device_pointer=dptr if on_device else None,
                ready_event=(event or None) if on_device else None)

    def __repr__(self):
        return (f"<gstfeaturemeta.Meta {self.model_name!r} unique-id {self.unique_id}, frame "
                f"{self.frame_width}x{self.frame_height}, levels "
                + ", ".join(f"{n} {list(lv.shape)} {lv.dtype}" for n, lv in self.levels.items()) + ">")

    def _level(self, level):
        name = level.name if isinstance(level, Level) else level
        try:
            return self._gi_levels[name]
        except KeyError:
            raise KeyError(f"level {name!r} not in the meta of {self.model_name!r} "
                           f"(levels: {', '.join(self.levels) or 'none'})") from None

    def frame_to_feature(self, level, x: float, y: float) -> Tuple[float, float]:
        """Frame pixel (x, y) to continuous cell coordinates of ``level`` (a name or a Level):
        (x * scale_x / stride, y * scale_y / stride)."""
        r = self._fmeta.frame_to_feature(self._level(level), x, y)
        return (r.fx, r.fy)

    def feature_to_frame(self, level, fx: float, fy: float) -> Tuple[float, float]:
        """Continuous cell coordinates of ``level`` to frame pixels (inverse of frame_to_feature)."""
        r = self._fmeta.feature_to_frame(self._level(level), fx, fy)
        return (r.x, r.y)

    def frame_box_to_feature(self, level, box) -> Tuple[float, float, float, float]:
        """A box (x0, y0, x1, y1) in frame pixels to cells of ``level`` (ROIAlign's spatial scale)."""
        return tuple(self._fmeta.frame_box_to_feature(self._level(level), [float(v) for v in box]))

    def feature_box_to_frame(self, level, box) -> Tuple[float, float, float, float]:
        """A box (x0, y0, x1, y1) in cells of ``level`` to frame pixels."""
        return tuple(self._fmeta.feature_box_to_frame(self._level(level), [float(v) for v in box]))

    @contextlib.contextmanager
    def mapped(self):
        """``mapped()`` of this meta's levels."""
        views = {name: _map_level(lv) for name, lv in self._gi_levels.items()}
        try:
            yield views
        finally:
            views.clear()

    def levels_as_numpy(self, dtype=None) -> Dict[str, np.ndarray]:
        """``levels()`` of this meta."""
        out_dtype = _output_dtype(dtype)
        with self.mapped() as views:
            return {name: _copy(view, self.levels[name].dtype, out_dtype)
                    for name, view in views.items()}


def _buffer_of(buffer) -> Gst.Buffer:
    if isinstance(buffer, Gst.Sample):
        buffer = buffer.get_buffer()
    if not isinstance(buffer, Gst.Buffer):
        raise TypeError(f"expected a Gst.Buffer (or a Gst.Sample), found {type(buffer).__name__}")
    return buffer


def meta(buffer, unique_id: Optional[int] = None) -> Optional[Meta]:
    """The feature meta of ``buffer`` (a Gst.Buffer or Gst.Sample): the first one, or the one of
    the producer with ``unique_id``; None when the buffer has none (e.g. a frame that
    resnetbackbone's inference-interval skipped)."""
    buffer = _buffer_of(buffer)
    if not Gst.is_initialized():
        Gst.init(None)
    if unique_id is None:
        fmeta = GstFeatureMeta.buffer_get_feature_meta(buffer)
    else:
        fmeta = GstFeatureMeta.buffer_get_feature_meta_by_id(buffer, unique_id)
    return Meta(buffer, fmeta) if fmeta is not None else None


def _required_meta(buffer, unique_id) -> Meta:
    m = meta(buffer, unique_id)
    if m is None:
        which = "a GstFeatureMeta" if unique_id is None else f"a GstFeatureMeta of unique-id {unique_id}"
        raise LookupError(f"expected {which} on the buffer, found none (is resnetbackbone upstream, "
                          "and did it run on this frame?)")
    return m


class _ExitFlag:
    def __init__(self):
        self.set = False

    def __bool__(self):
        return self.set


_exiting = _ExitFlag()
atexit.register(lambda flag=_exiting: setattr(flag, "set", True))


class _Mapping:
    """One read mapping of a level's data buffer, exposed to numpy by __array_interface__.

    Arrays made from it keep it alive (numpy holds it as their base); it unmaps when the last of
    them is gone, so a view kept after ``mapped()``'s block stays valid instead of pointing at
    unmapped memory, and the mapping is never leaked."""

    def __init__(self, data: Gst.Buffer, info):
        self._data = data
        self._info = info
        address = np.frombuffer(info.data, dtype=np.uint8).__array_interface__["data"][0]
        self.__array_interface__ = {"version": 3, "shape": (info.size,), "typestr": "|u1",
                                    "data": (address, True)}  # read-only

    def __del__(self, _exiting=_exiting, _is_finalizing=sys.is_finalizing):
        info, self._info = self._info, None
        # Views still alive when Python exits are freed during its finalization, when gst-python's
        # unmap crashes: they are left mapped (the process is ending; nothing leaks past it).
        if info is not None and not _exiting and not _is_finalizing():
            self._data.unmap(info)


def _map_level(lv) -> np.ndarray:
    data = lv.get_data()
    info = data.map(Gst.MapFlags.READ)
    if not info.__parent__:
        raise RuntimeError(f"level {lv.get_name()}: cannot map its data buffer for reading "
                           "(a GPU level whose download failed? see the GStreamer log)")
    raw = np.asarray(_Mapping(data, info))
    dt = _NUMPY_DTYPES[lv.get_dtype()]
    shape = tuple(lv.get_dims())
    strides = tuple(s * dt.itemsize for s in lv.get_strides())
    view = np.ndarray(shape, dtype=dt, buffer=raw, offset=lv.get_offset(), strides=strides)
    view.flags.writeable = False
    return view


def _output_dtype(dtype):
    if dtype is None:
        return np.dtype(np.float32)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"dtype must be float32 or float16, found {dt}")
    return dt


def _copy(view: np.ndarray, level_dtype: str, out_dtype: np.dtype) -> np.ndarray:
    if level_dtype == "bfloat16":  # the bits of a float32 whose low 16 bits are zero: exact
        f32 = (np.array(view, dtype=np.uint32, order="C") << 16).view(np.float32)
        return f32 if out_dtype == np.float32 else f32.astype(out_dtype)
    return np.array(view, dtype=out_dtype, order="C", copy=True)


def levels(buffer, dtype=None, unique_id: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Every level of the buffer's feature meta as a numpy array of its own (a copy, writable,
    C-contiguous, shape [N, C, H, W]), by level name in the producer's order.

    ``dtype``: None or "float32" (default: float16 and bfloat16 levels converted exactly), or
    "float16" (float16 levels kept, float32 ones rounded to nearest even). ``unique_id``: the
    producer's unique-id when several producers' metas are on the buffer (default: the first).
    Raises LookupError when the buffer has no such meta."""
    return _required_meta(buffer, unique_id).levels_as_numpy(dtype)


@contextlib.contextmanager
def mapped(buffer, unique_id: Optional[int] = None):
    """Zero-copy read-only views of every level, inside a ``with`` block::

        with gstfeaturemeta.mapped(buffer) as views:
            energy = float((views["res4"] ** 2).sum())

    Each view is a numpy array over the level's mapped data buffer, with the level's shape and
    strides: float32, float16, or uint16 holding the bits of a bfloat16 level. The dict is
    emptied when the block ends; a view (or an array derived from it) kept after the block stays
    valid and keeps its level's data mapped until it is garbage, so copy what you keep for long
    (``levels()`` does). Raises LookupError when the buffer has no such meta."""
    m = _required_meta(buffer, unique_id)
    with m.mapped() as views:
        yield views
