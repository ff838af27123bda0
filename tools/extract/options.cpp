// SPDX-License-Identifier: Apache-2.0
#include "options.h"

#include <gst/gst.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <regex>
#include <sstream>

#include "backbone/engine_table.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace backbone::extract {
namespace {

const char* const kDefaultExtensions = "mp4,m4v,mov,mkv,webm,avi,ogv,ogg,mpg,mpeg,ts,mts,m2ts,flv,wmv,3gp,mxf";

// "engine cuda", "engines cuda and onednn": the engines of the library's table that run `p`.
std::string engines_running(backbone::Precision p) {
  std::vector<std::string> names;
  for (const auto& e : backbone::engine_table())
    if (std::find(e.precisions.begin(), e.precisions.end(), p) != e.precisions.end()) names.push_back(e.name);
  std::string s = names.size() == 1 ? "engine " : "engines ";
  for (size_t i = 0; i < names.size(); ++i) s += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return s;
}

po::options_description describe(Options* o, std::string* extensions) {
  po::options_description model("Model (as the resnetbackbone element's properties)");
  model.add_options()
      ("config-file,c", po::value(&o->config_file)->value_name("FILE"),
       "detectron2 YAML config, a ResNet or an FPN (MODEL.BACKBONE.NAME build_resnet_fpn_backbone: levels "
       "p2..p6; build_retinanet_resnet_fpn_backbone: p3..p7) (default: detectron2's R-50, res2..res5)")
      ("weights,w", po::value(&o->weights)->value_name("FILE"),
       "checkpoint (.pkl, .pth, .pt, .safetensors; default: the config's MODEL.WEIGHTS, else seeded "
       "weights with a warning)")
      ("out-features", po::value(&o->out_features)->value_name("LIST"),
       "comma-separated levels among stem,res2,res3,res4,res5, and with an FPN config its p-levels "
       "(p2..p7) (default: the config's MODEL.RESNETS.OUT_FEATURES; an FPN config: every p-level)")
      ("device", po::value(&o->device)->value_name("DEV")->default_value("auto"),
       "cpu, cuda:N or auto (cuda:0 when a CUDA device is usable, else cpu); cuda:N runs engine cuda, and "
       "without a usable CUDA device every input fails with the reason")
      ("precision", po::value(&o->precision)->value_name("P")->default_value("fp32"),
       ("fp32, fp16, bf16 or auto (fp16: " + engines_running(backbone::Precision::Float16) +
        "; bf16: " + engines_running(backbone::Precision::BFloat16) + "; an engine that does not run P fails; "
        "auto: the engine's fastest precision within its documented bound, onednn measures fp32 against bf16 "
        "once per CPU model, thread count and input shape, cached; other engines fp32)")
           .c_str())
      ("conv-algorithm", po::value(&o->conv_algorithm)->value_name("A")->default_value("auto"),
       "float32 3x3 convolutions where the engine has Winograd kernels (onednn): auto (Winograd per layer "
       "where measured faster and within 1e-6 of the direct convolution; measured once per CPU model and "
       "thread count, cached), direct or winograd (every such layer)")
      ("engine", po::value(&o->engine)->value_name("NAME")->default_value("auto"),
       ("auto or " + backbone::engine_names() +
        " (auto: the first engine of this build, in that order, that runs the device and precision); printed "
        "once per run and stored in extract.json")
           .c_str())
      ("threads", po::value(&o->threads)->value_name("N")->default_value(0),
       "engine CPU threads (0: every core for the shared model; with --private-models the cores divided by --jobs)");
  po::options_description frames("Frames");
  frames.add_options()
      ("every", po::value(&o->every)->value_name("N")->default_value(1), "features of every Nth decoded frame (1: all)")
      ("fps", po::value(&o->fps)->value_name("RATE"),
       "features at most RATE frames per second of video (e.g. 2, 0.5, 30000/1001); frames are dropped, "
       "never duplicated; not with --every")
      ("resize", po::value(&o->resize)->value_name("MODE")->default_value("none"),
       "none, shortest-edge (--min-size, --max-size) or fixed (--width, --height)")
      ("min-size", po::value(&o->min_size)->value_name("N")->default_value(0),
       "shortest edge for --resize shortest-edge (0: the config's INPUT.MIN_SIZE_TEST)")
      ("max-size", po::value(&o->max_size)->value_name("N")->default_value(0),
       "longest edge limit for --resize shortest-edge (0: the config's INPUT.MAX_SIZE_TEST)")
      ("width", po::value(&o->width)->value_name("N")->default_value(0), "network input width for --resize fixed")
      ("height", po::value(&o->height)->value_name("N")->default_value(0), "network input height for --resize fixed")
      ("size-divisibility", po::value(&o->size_divisibility)->value_name("N")->default_value(0),
       "zero padding at the bottom and right to a multiple of N (0 or 1: none)");
  po::options_description output("Output");
  output.add_options()
      ("output-dir,o", po::value(&o->output_dir)->value_name("DIR"), "output folder (required)")
      ("dtype", po::value(&o->dtype)->value_name("T")->default_value("float32"), "float32 or float16")
      ("max-frames-per-file", po::value(&o->max_frames_per_file)->value_name("N")->default_value(256),
       "frames per safetensors file (featuresink max-frames)")
      ("overwrite", po::bool_switch(&o->overwrite),
       "redo inputs whose output is finished (default: resume, finished outputs are skipped)");
  po::options_description inputs("Inputs");
  inputs.add_options()
      ("list,l", po::value(&o->list_files)->value_name("FILE")->composing(),
       "a file with one input per line (# comments; relative paths are relative to the list's folder)")
      ("extensions", po::value(extensions)->value_name("LIST")->default_value(kDefaultExtensions),
       "file extensions taken from folders (case-insensitive)");
  po::options_description work("Work split and reporting");
  work.add_options()
      ("jobs,j", po::value(&o->jobs)->value_name("N")->default_value(1),
       "pipelines run at the same time; they share one model (one thread pool of --threads, default every "
       "core) that batches their frames, unless --private-models")
      ("batch-size", po::value(&o->batch_size)->value_name("N")->default_value(0),
       "most frames of the --jobs pipelines run in one forward of the shared model (0: --jobs)")
      ("private-models", po::bool_switch(&o->private_models),
       "one model per pipeline (each with the cores divided by --jobs), as before sharing; for comparison")
      ("num-shards", po::value(&o->num_shards)->value_name("N")->default_value(1), "number of shards")
      ("shard-index", po::value(&o->shard_index)->value_name("K")->default_value(0),
       "this shard, 0 .. N-1: inputs whose FNV-1a 64 hash of the relative path modulo N is K")
      ("progress", po::value(&o->progress)->value_name("MODE")->default_value("auto"),
       "auto (a bar on a terminal, else lines), bar, lines or none")
      ("progress-interval", po::value(&o->progress_interval)->value_name("S")->default_value(10.0),
       "seconds between progress lines when not a terminal")
      ("quiet,q", po::bool_switch(&o->quiet), "no progress and no summary; failures are still reported")
      ("help,h", "this text")
      ("version", "the version");
  po::options_description all;
  all.add(inputs).add(model).add(frames).add(output).add(work);
  return all;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

void check_choice(const std::string& name, const std::string& value, std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw UsageError("--" + name + " must be one of " + list + ", got \"" + value + "\"");
}

void check_min(const std::string& name, int value, int min) {
  if (value < min)
    throw UsageError("--" + name + " must be at least " + std::to_string(min) + ", got " + std::to_string(value));
}

// "2", "0.5", "30000/1001" -> a positive fraction.
void parse_rate(const std::string& text, int* num, int* den) {
  static const std::regex fraction(R"(^\s*(\d+)\s*/\s*(\d+)\s*$)");
  std::smatch m;
  if (std::regex_match(text, m, fraction)) {
    long long n = std::stoll(m[1]), d = std::stoll(m[2]);
    if (n <= 0 || d <= 0 || n > G_MAXINT || d > G_MAXINT)
      throw UsageError("--fps must be a positive rate, got \"" + text + "\"");
    *num = static_cast<int>(n);
    *den = static_cast<int>(d);
    return;
  }
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end == text.c_str() || *end != '\0' || !std::isfinite(v) || v <= 0.0 || v > 1000.0)
    throw UsageError("--fps must be a positive number of frames per second (at most 1000) or N/D, got \"" + text +
                     "\"");
  gst_util_double_to_fraction(v, num, den);
}

}  // namespace

std::string usage_text() {
  Options o;
  std::string ext;
  std::ostringstream s;
  s << "usage: backbone-extract -o DIR [options] INPUT... [--list FILE]\n"
       "Writes the backbone features of every video: DIR/<input's relative path>/ holds featuresink's\n"
       "safetensors files, index.json and extract.json; DIR/manifest.json lists every input's status.\n"
       "INPUT: a video file, a folder (searched recursively by --extensions), a glob pattern (quote it),\n"
       "or a URI GStreamer can read (file://, http://, rtsp://, ...).\n"
    << describe(&o, &ext);
  return s.str();
}

bool parse_options(int argc, char** argv, Options* o, std::string* help_text) {
  std::string extensions;
  po::options_description visible = describe(o, &extensions);
  po::options_description all;
  all.add(visible);
  all.add_options()("input", po::value(&o->inputs)->composing(), "");
  po::positional_options_description positional;
  positional.add("input", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    if (vm.count("help")) {
      *help_text = usage_text();
      return false;
    }
    if (vm.count("version")) {
      *help_text = std::string("backbone-extract ") + BACKBONE_EXTRACT_VERSION + "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }

  if (o->inputs.empty() && o->list_files.empty()) throw UsageError("no input: give files, folders, patterns, URIs or --list FILE");
  if (o->output_dir.empty()) throw UsageError("--output-dir (-o) is required");
  if (fs::exists(o->output_dir) && !fs::is_directory(o->output_dir))
    throw UsageError("--output-dir \"" + o->output_dir + "\" exists and is not a folder");
  for (const auto& l : o->list_files)
    if (!fs::is_regular_file(l)) throw UsageError("--list \"" + l + "\": no such file");
  if (!o->config_file.empty() && !fs::is_regular_file(o->config_file))
    throw UsageError("--config-file \"" + o->config_file + "\": no such file");
  if (!o->weights.empty() && !fs::is_regular_file(o->weights))
    throw UsageError("--weights \"" + o->weights + "\": no such file");
  if (!o->out_features.empty()) {
    std::stringstream ss(o->out_features);
    std::string f;
    while (std::getline(ss, f, ','))
      check_choice("out-features", f, {"stem", "res2", "res3", "res4", "res5", "p2", "p3", "p4", "p5", "p6", "p7"});
  }
  static const std::regex device(R"(^(cpu|auto|cuda(:\d+)?)$)");
  if (!std::regex_match(o->device, device))
    throw UsageError("--device must be cpu, cuda:N or auto, got \"" + o->device + "\"");
  check_choice("precision", o->precision, {"fp32", "fp16", "bf16", "auto"});
  check_choice("conv-algorithm", o->conv_algorithm, {"auto", "direct", "winograd"});
  if (o->engine != "auto" && !backbone::is_known_engine(o->engine))
    throw UsageError("--engine must be auto, " + backbone::engine_names() + ", got \"" + o->engine + "\"");
  check_choice("dtype", o->dtype, {"float32", "float16"});
  check_choice("resize", o->resize, {"none", "shortest-edge", "fixed"});
  check_choice("progress", o->progress, {"auto", "bar", "lines", "none"});
  check_min("threads", o->threads, 0);
  check_min("every", o->every, 1);
  check_min("min-size", o->min_size, 0);
  check_min("max-size", o->max_size, 0);
  check_min("width", o->width, 0);
  check_min("height", o->height, 0);
  check_min("size-divisibility", o->size_divisibility, 0);
  check_min("max-frames-per-file", o->max_frames_per_file, 1);
  check_min("jobs", o->jobs, 1);
  check_min("batch-size", o->batch_size, 0);
  if (o->batch_size > 256) throw UsageError("--batch-size must be at most 256, found " + std::to_string(o->batch_size));
  check_min("num-shards", o->num_shards, 1);
  check_min("shard-index", o->shard_index, 0);
  if (o->shard_index >= o->num_shards)
    throw UsageError("--shard-index must be below --num-shards (" + std::to_string(o->num_shards) + "), got " +
                     std::to_string(o->shard_index));
  if (!(o->progress_interval > 0.0))
    throw UsageError("--progress-interval must be a positive number of seconds");
  if (!o->fps.empty()) {
    if (!vm["every"].defaulted()) throw UsageError("--every and --fps exclude each other: choose one sampling");
    parse_rate(o->fps, &o->fps_num, &o->fps_den);
  }
  if (o->resize == "fixed" && (o->width == 0 || o->height == 0))
    throw UsageError("--resize fixed needs --width and --height");
  if (o->resize != "fixed" && (o->width != 0 || o->height != 0))
    throw UsageError("--width and --height need --resize fixed");
  if (o->resize != "shortest-edge" && (o->min_size != 0 || o->max_size != 0))
    throw UsageError("--min-size and --max-size need --resize shortest-edge");
  if (o->min_size > 16384 || o->max_size > 16384 || o->width > 16384 || o->height > 16384)
    throw UsageError("sizes must be at most 16384");

  o->extensions.clear();
  std::stringstream ss(extensions);
  std::string e;
  while (std::getline(ss, e, ',')) {
    e = lower(e);
    if (!e.empty() && e[0] == '.') e.erase(0, 1);
    if (!e.empty()) o->extensions.push_back(e);
  }
  if (o->extensions.empty()) throw UsageError("--extensions must name at least one extension");
  return true;
}

}  // namespace backbone::extract
