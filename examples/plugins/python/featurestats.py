# SPDX-License-Identifier: Apache-2.0
"""featurestats: a GStreamer element written in Python that reads the features downstream of
resnetbackbone and posts per-frame statistics of each level as element messages.

A template for downstream Python elements: a GstBase.BaseTransform in passthrough (the video and
its metas pass unchanged) that reads each buffer's GstFeatureMeta with gstfeaturemeta.mapped()
(zero-copy numpy views).

Run it from this folder's parent on GST_PLUGIN_PATH (the python plugin loader of gst-python,
Debian package gstreamer1.0-python3-plugin-loader, loads <dir>/python/*.py of every entry):

    export GST_PLUGIN_PATH=$PWD/examples/plugins:$PWD/build/lib/gstreamer-1.0
    gst-launch-1.0 -m videotestsrc num-buffers=5 ! resnetbackbone ! featurestats ! fakesink

Each frame with features gives one element message "featurestats" with: frame (index of the
frame among those with features), pts (nanoseconds, -1 when none), model-name, unique-id, and for
every level L (or those of the levels property): L-mean, L-std, L-min, L-max (over all elements)
and L-active (fraction of elements > 0, the ReLU's active units).
"""

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
from gi.repository import GLib, GObject, Gst, GstBase  # noqa: E402
import numpy as np  # noqa: E402

import gstfeaturemeta  # noqa: E402

Gst.init(None)


class FeatureStats(GstBase.BaseTransform):
    __gstmetadata__ = ("Feature statistics", "Filter/Analyzer/Video",
                       "Posts per-frame statistics of the feature maps (GstFeatureMeta) as element messages",
                       "gst-backbone")
    __gsttemplates__ = (
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, Gst.Caps.new_any()),
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, Gst.Caps.new_any()))
    __gproperties__ = {
        "levels": (str, "Levels", "Comma-separated levels to report (e.g. res4,res5); empty for all",
                   "", GObject.ParamFlags.READWRITE),
        "unique-id": (int, "Unique ID", "Read the meta of the producer with this unique-id; -1 for the first",
                      -1, GLib.MAXINT, -1, GObject.ParamFlags.READWRITE),
    }

    def __init__(self):
        super().__init__()
        self.set_passthrough(True)
        self._levels = ""
        self._unique_id = -1
        self._frame = 0

    def do_get_property(self, prop):
        if prop.name == "levels":
            return self._levels
        if prop.name == "unique-id":
            return self._unique_id
        raise AttributeError(f"unknown property {prop.name}")

    def do_set_property(self, prop, value):
        if prop.name == "levels":
            self._levels = value or ""
        elif prop.name == "unique-id":
            self._unique_id = value
        else:
            raise AttributeError(f"unknown property {prop.name}")

    def do_start(self):
        self._frame = 0
        return True

    def do_transform_ip(self, buffer):
        # Exceptions must not cross into GStreamer: report them as an element error.
        try:
            self._post_stats(buffer)
        except Exception as e:  # noqa: BLE001
            Gst.error(f"featurestats: {e}")
            self.post_message(Gst.Message.new_error(
                self, GLib.Error.new_literal(Gst.stream_error_quark(), f"featurestats: {e}", Gst.StreamError.FAILED), f"{type(e).__name__}: {e}"))
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK

    def _post_stats(self, buffer):
        uid = None if self._unique_id < 0 else self._unique_id
        meta = gstfeaturemeta.meta(buffer, uid)
        if meta is None:  # a frame without features (inference-interval, another producer)
            return
        wanted = [n.strip() for n in self._levels.split(",") if n.strip()]
        missing = [n for n in wanted if n not in meta.levels]
        if missing:
            raise KeyError(f"levels property names {', '.join(missing)}, the meta has "
                           f"{', '.join(meta.levels)}")
        s = Gst.Structure.new_empty("featurestats")
        s.set_value("frame", GObject.Value(GObject.TYPE_UINT64, self._frame))
        pts = buffer.pts
        s.set_value("pts", GObject.Value(GObject.TYPE_INT64, -1 if pts == Gst.CLOCK_TIME_NONE else pts))
        s.set_value("model-name", meta.model_name or "")
        s.set_value("unique-id", GObject.Value(GObject.TYPE_UINT, meta.unique_id))
        with meta.mapped() as views:
            for name in wanted or list(views):
                v = views[name]
                if meta.levels[name].dtype == "bfloat16":
                    v = (v.astype(np.uint32) << 16).view(np.float32)
                v = v.astype(np.float64)  # the statistics in double, whatever the level's dtype
                for stat, value in (("mean", v.mean()), ("std", v.std()), ("min", v.min()),
                                    ("max", v.max()), ("active", (v > 0).mean())):
                    s.set_value(f"{name}-{stat}", GObject.Value(GObject.TYPE_DOUBLE, float(value)))
        self._frame += 1
        self.post_message(Gst.Message.new_element(self, s))


GObject.type_register(FeatureStats)
__gstelementfactory__ = ("featurestats", Gst.Rank.NONE, FeatureStats)
