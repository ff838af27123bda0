// SPDX-License-Identifier: Apache-2.0
#include "pipeline.h"

#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace backbone::extract {
namespace {

struct Unref {
  void operator()(gpointer p) const {
    if (p) gst_object_unref(p);
  }
};
using ElementPtr = std::unique_ptr<GstElement, Unref>;

GstElement* make(const char* factory, const char* name) {
  GstElement* e = gst_element_factory_make(factory, name);
  if (!e)
    throw std::runtime_error(std::string("the GStreamer element \"") + factory +
                             "\" is missing (gst-inspect-1.0 " + factory + ")");
  return e;
}

struct PadContext {
  GstElement* pipeline;
  GstElement* convert;
  std::atomic<int> video_pads{0};
};

void on_pad_added(GstElement*, GstPad* pad, gpointer data) {
  auto* ctx = static_cast<PadContext*>(data);
  GstCaps* caps = gst_pad_get_current_caps(pad);
  if (!caps) caps = gst_pad_query_caps(pad, nullptr);
  bool video = false;
  if (caps && gst_caps_get_size(caps) > 0)
    video = g_str_has_prefix(gst_structure_get_name(gst_caps_get_structure(caps, 0)), "video/");
  if (caps) gst_caps_unref(caps);
  GstPad* sink = video ? gst_element_get_static_pad(ctx->convert, "sink") : nullptr;
  if (sink && !gst_pad_is_linked(sink) && gst_pad_link(pad, sink) == GST_PAD_LINK_OK) {
    ctx->video_pads++;
    gst_object_unref(sink);
    return;
  }
  if (sink) gst_object_unref(sink);
  // Audio, subtitles, a second video stream: consumed and ignored.
  GstElement* fake = gst_element_factory_make("fakesink", nullptr);
  g_object_set(fake, "sync", FALSE, "async", FALSE, nullptr);
  gst_bin_add(GST_BIN(ctx->pipeline), fake);
  gst_element_sync_state_with_parent(fake);
  GstPad* fsink = gst_element_get_static_pad(fake, "sink");
  gst_pad_link(pad, fsink);
  gst_object_unref(fsink);
}

struct FrameClock {
  std::atomic<int64_t> frames{0};
  std::chrono::steady_clock::time_point start, first, last;  // first/last: written by the streaming thread only
};

GstPadProbeReturn count_frames(GstPad*, GstPadProbeInfo* info, gpointer data) {
  GstBuffer* buffer = GST_PAD_PROBE_INFO_BUFFER(info);
  auto* clock = static_cast<FrameClock*>(data);
  if (buffer && gst_buffer_get_feature_meta(buffer)) {
    clock->last = std::chrono::steady_clock::now();
    if (clock->frames.fetch_add(1) == 0) clock->first = clock->last;
  }
  return GST_PAD_PROBE_OK;
}

std::string error_text(GstMessage* msg) {
  GError* err = nullptr;
  gchar* debug = nullptr;
  gst_message_parse_error(msg, &err, &debug);
  std::string s = GST_OBJECT_NAME(GST_MESSAGE_SRC(msg));
  s += ": ";
  s += err ? err->message : "unknown error";
  if (debug) {
    std::string d(debug);
    const auto nl = d.find('\n');  // the last line of GStreamer's debug text is the useful one
    const auto last = d.rfind('\n');
    if (last != std::string::npos && last + 1 < d.size()) d = d.substr(last + 1);
    else if (nl != std::string::npos) d = d.substr(0, nl);
    s += " (" + d + ")";
  }
  g_clear_error(&err);
  g_free(debug);
  return s;
}

}  // namespace

void ensure_plugin(const std::string& extra_dir) {
  GstElementFactory* f = gst_element_factory_find("resnetbackbone");
  if (f) {
    gst_object_unref(f);
    return;
  }
  std::vector<std::string> candidates;
  if (!extra_dir.empty()) candidates.push_back(extra_dir + "/libgstbackbone.so");
  candidates.push_back(BACKBONE_EXTRACT_INSTALLED_PLUGIN);
  std::string tried;
  for (const auto& c : candidates) {
    if (!std::filesystem::exists(c)) {
      tried += " " + c;
      continue;
    }
    GError* err = nullptr;
    GstPlugin* p = gst_plugin_load_file(c.c_str(), &err);
    if (p) {
      gst_object_unref(p);
      return;
    }
    tried += " " + c + " (" + (err ? err->message : "could not load") + ")";
    g_clear_error(&err);
  }
  throw std::runtime_error("the GStreamer plugin with resnetbackbone and featuresink was not found (set "
                           "GST_PLUGIN_PATH to the folder of libgstbackbone.so); tried:" + tried);
}

RunResult run_pipeline(const std::string& uri, const std::string& location, const Options& o, int threads,
                       const std::atomic<bool>& cancel, const ProgressFn& progress, const EngineFn& on_engine) {
  RunResult result;
  ElementPtr pipeline(gst_pipeline_new("extract"));
  gst_object_ref_sink(pipeline.get());
  GstElement* decode = make("uridecodebin", "decode");
  GstElement* convert = make("videoconvert", "convert");
  GstElement* queue = make("queue", "queue");
  GstElement* backbone = make("resnetbackbone", "backbone");
  GstElement* sink = make("featuresink", "sink");
  GstElement* rate = nullptr;
  GstElement* rate_caps = nullptr;
  gst_bin_add_many(GST_BIN(pipeline.get()), decode, convert, queue, backbone, sink, nullptr);

  g_object_set(decode, "uri", uri.c_str(), nullptr);
  // A few frames decoded ahead while the backbone computes (decoding runs in its own thread).
  g_object_set(queue, "max-size-buffers", 4u, "max-size-bytes", 0u, "max-size-time", guint64(0), nullptr);

  if (!o.config_file.empty()) g_object_set(backbone, "config-file", o.config_file.c_str(), nullptr);
  if (!o.weights.empty()) g_object_set(backbone, "weights", o.weights.c_str(), nullptr);
  if (!o.out_features.empty()) g_object_set(backbone, "out-features", o.out_features.c_str(), nullptr);
  g_object_set(backbone, "engine", o.engine.c_str(), "device", o.device.c_str(), "num-threads",
               static_cast<guint>(threads), "inference-interval", static_cast<guint>(o.every), "size-divisibility",
               static_cast<guint>(o.size_divisibility), nullptr);
  gst_util_set_object_arg(G_OBJECT(backbone), "precision", o.precision.c_str());
  gst_util_set_object_arg(G_OBJECT(backbone), "conv-algorithm", o.conv_algorithm.c_str());
  if (o.shared_model())
    g_object_set(backbone, "model-instance-id", "backbone-extract", "batch-size",
                 static_cast<guint>(o.batch_size > 0 ? o.batch_size : o.jobs), nullptr);
  gst_util_set_object_arg(G_OBJECT(backbone), "resize", o.resize.c_str());
  if (o.resize == "shortest-edge")
    g_object_set(backbone, "min-size", static_cast<guint>(o.min_size), "max-size", static_cast<guint>(o.max_size),
                 nullptr);
  if (o.resize == "fixed")
    g_object_set(backbone, "width", static_cast<guint>(o.width), "height", static_cast<guint>(o.height), nullptr);
  g_object_set(sink, "location", location.c_str(), "max-frames", static_cast<guint>(o.max_frames_per_file), nullptr);
  gst_util_set_object_arg(G_OBJECT(sink), "dtype", o.dtype.c_str());

  bool linked;
  if (o.fps_num > 0) {
    rate = make("videorate", "rate");
    rate_caps = make("capsfilter", "rate_caps");
    g_object_set(rate, "drop-only", TRUE, nullptr);
    // At most the rate: videorate (drop-only) cannot raise a rate, and the range lets a slower
    // source keep its own.
    GstCaps* caps =
        gst_caps_new_simple("video/x-raw", "framerate", GST_TYPE_FRACTION_RANGE, 0, 1, o.fps_num, o.fps_den, nullptr);
    g_object_set(rate_caps, "caps", caps, nullptr);
    gst_caps_unref(caps);
    gst_bin_add_many(GST_BIN(pipeline.get()), rate, rate_caps, nullptr);
    linked = gst_element_link_many(convert, rate, rate_caps, queue, backbone, sink, nullptr);
  } else {
    linked = gst_element_link_many(convert, queue, backbone, sink, nullptr);
  }
  if (!linked) throw std::runtime_error("could not link the extraction pipeline");

  {
    gchar* props = nullptr;
    std::string launch = "uridecodebin uri=\"" + uri + "\" ! videoconvert";
    if (rate) launch += " ! videorate drop-only=true ! \"video/x-raw,framerate=[0/1," + std::to_string(o.fps_num) + "/" +
                        std::to_string(o.fps_den) + "]\"";
    launch += " ! queue max-size-buffers=4 ! resnetbackbone";
    for (GstElement* e : {backbone, sink}) {
      if (e == sink) launch += " ! featuresink";
      guint n = 0;
      GParamSpec** specs = g_object_class_list_properties(G_OBJECT_GET_CLASS(e), &n);
      for (guint i = 0; i < n; ++i) {
        GParamSpec* s = specs[i];
        if (!(s->flags & G_PARAM_WRITABLE) || !(s->flags & G_PARAM_READABLE) || s->owner_type != G_OBJECT_TYPE(e))
          continue;
        GValue v = G_VALUE_INIT;
        g_value_init(&v, s->value_type);
        g_object_get_property(G_OBJECT(e), s->name, &v);
        if (!g_param_value_defaults(s, &v)) {
          props = gst_value_serialize(&v);
          if (props) launch += std::string(" ") + s->name + "=" + (G_VALUE_HOLDS_STRING(&v) ? "\"" : "") + props +
                               (G_VALUE_HOLDS_STRING(&v) ? "\"" : "");
          g_free(props);
        }
        g_value_unset(&v);
      }
      g_free(specs);
    }
    result.launch = launch;
  }

  PadContext ctx{pipeline.get(), convert};
  g_signal_connect(decode, "pad-added", G_CALLBACK(on_pad_added), &ctx);
  FrameClock clock;
  std::atomic<int64_t>& frames = clock.frames;
  GstPad* sink_pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(sink_pad, GST_PAD_PROBE_TYPE_BUFFER, count_frames, &clock, nullptr);
  gst_object_unref(sink_pad);

  GstBus* bus = gst_element_get_bus(pipeline.get());
  const auto start = std::chrono::steady_clock::now();
  clock.start = start;
  // The element's description of its engine: set when the model loads, completed with the
  // kernels after the first frame, kept after the element stops.
  auto engine_description = [backbone]() {
    gchar* d = nullptr;
    g_object_get(backbone, "engine-description", &d, nullptr);
    std::string s = d ? d : "";
    g_free(d);
    return s;
  };
  bool engine_reported = false;
  // After the first frame at the sink: the element has updated its description with the kernels
  // the engine chose for this video's size.
  auto report_engine = [&]() {
    if (!on_engine || engine_reported || frames == 0) return;
    engine_reported = true;
    const std::string description = engine_description();
    if (!description.empty()) on_engine(description);
  };
  auto finish = [&](bool ok, const std::string& error) {
    report_engine();  // a short video can end before the loop below saw its first frame
    gst_element_set_state(pipeline.get(), GST_STATE_NULL);
    result.engine = engine_description();
    gst_bus_set_flushing(bus, TRUE);
    gst_object_unref(bus);
    result.ok = ok;
    result.error = error;
    result.frames = frames.load();
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (result.frames > 0) {  // the streaming thread has stopped (state NULL)
      result.first_frame = std::chrono::duration<double>(clock.first - start).count();
      result.last_frame = std::chrono::duration<double>(clock.last - start).count();
    }
    return result;
  };

  if (gst_element_set_state(pipeline.get(), GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
    std::string e = msg ? error_text(msg) : "the pipeline could not start";
    if (msg) gst_message_unref(msg);
    return finish(false, e);
  }
  gint64 duration = -1;
  while (true) {
    GstMessage* msg = gst_bus_timed_pop_filtered(bus, 100 * GST_MSECOND,
                                                 static_cast<GstMessageType>(GST_MESSAGE_ERROR | GST_MESSAGE_EOS));
    if (msg) {
      const bool eos = GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS;
      std::string e = eos ? "" : error_text(msg);
      gst_message_unref(msg);
      if (!eos) return finish(false, e);
      if (ctx.video_pads == 0) return finish(false, "no video stream in this input");
      if (frames == 0) return finish(false, "no frame was decoded");
      gst_element_set_state(pipeline.get(), GST_STATE_NULL);  // featuresink completes its last file
      return finish(true, "");
    }
    if (cancel) return finish(false, "interrupted");
    report_engine();
    if (progress) {
      gint64 position = -1;
      if (duration <= 0) gst_element_query_duration(pipeline.get(), GST_FORMAT_TIME, &duration);
      gst_element_query_position(pipeline.get(), GST_FORMAT_TIME, &position);
      const double fraction = duration > 0 && position >= 0 ? std::min(1.0, double(position) / double(duration)) : -1.0;
      progress(frames.load(), fraction);
    }
  }
}

}  // namespace backbone::extract
