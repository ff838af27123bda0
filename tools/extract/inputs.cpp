// SPDX-License-Identifier: Apache-2.0
#include "inputs.h"

#include <glob.h>
#include <gst/gst.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace fs = std::filesystem;

namespace backbone::extract {
namespace {

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool is_uri(const std::string& s) { return gst_uri_is_valid(s.c_str()) && s.find("://") != std::string::npos; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string to_uri(const fs::path& p) {
  GError* err = nullptr;
  gchar* uri = gst_filename_to_uri(p.c_str(), &err);
  if (!uri) {
    std::string m = err ? err->message : "invalid file name";
    g_clear_error(&err);
    throw std::runtime_error(m);
  }
  std::string s(uri);
  g_free(uri);
  return s;
}

struct Resolver {
  const std::vector<std::string>& extensions;
  std::vector<Input> out;

  void file(const std::string& argument, const fs::path& path, const std::string& relative) {
    Input in;
    in.argument = argument;
    in.source = fs::absolute(path).lexically_normal().string();
    in.relative = relative;
    try {
      in.uri = to_uri(fs::absolute(path));
    } catch (const std::exception& e) {
      in.error = e.what();
    }
    out.push_back(in);
  }

  void fail(const std::string& argument, const std::string& error) {
    Input in;
    in.argument = argument;
    in.source = argument;
    in.relative = argument;
    in.error = error;
    out.push_back(in);
  }

  bool wanted(const fs::path& p) const {
    std::string e = lower(p.extension().string());
    if (!e.empty()) e.erase(0, 1);
    return std::find(extensions.begin(), extensions.end(), e) != extensions.end();
  }

  void folder(const std::string& argument, const fs::path& root) {
    std::error_code ec;
    auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink |
                                                         fs::directory_options::skip_permission_denied, ec);
    if (ec) return fail(argument, "cannot read the folder: " + ec.message());
    size_t found = 0;
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) return fail(argument, "cannot read the folder: " + ec.message());
      if (it->is_regular_file(ec) && wanted(it->path())) {
        file(argument, it->path(), it->path().lexically_relative(root).generic_string());
        ++found;
      }
    }
    if (found == 0) fail(argument, "no file with one of the extensions (--extensions) in this folder");
  }

  void pattern(const std::string& argument, const fs::path& base) {
    // The root: the longest leading part of the pattern without wildcards.
    fs::path p(argument), root;
    for (const auto& part : p) {
      if (has_wildcard(part.string())) break;
      root /= part;
    }
    if (root == p) root = p.parent_path();
    fs::path full = p.is_absolute() ? p : base / p;
    fs::path full_root = root.is_absolute() ? root : base / root;
    glob_t g{};
    const int rc = ::glob(full.c_str(), 0, nullptr, &g);
    size_t found = 0;
    if (rc == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) {
        fs::path m(g.gl_pathv[i]);
        std::error_code ec;
        if (fs::is_directory(m, ec)) {
          folder(argument, m);  // a pattern naming folders: their videos, relative to the folder
          ++found;
        } else if (fs::is_regular_file(m, ec)) {
          file(argument, m, m.lexically_relative(full_root).generic_string());
          ++found;
        }
      }
    }
    globfree(&g);
    if (found == 0) fail(argument, "the pattern matched no file");
  }

  void argument(const std::string& argument, const fs::path& base) {
    if (is_uri(argument)) {
      gchar* scheme = gst_uri_get_protocol(argument.c_str());
      const std::string protocol = scheme ? lower(scheme) : "";
      g_free(scheme);
      if (protocol == "file") {
        gchar* name = g_filename_from_uri(argument.c_str(), nullptr, nullptr);
        if (!name) return fail(argument, "not a valid file URI");
        fs::path p(name);
        g_free(name);
        if (!fs::is_regular_file(p)) return fail(argument, "no such file");
        return file(argument, p, p.filename().string());
      }
      Input in;
      in.argument = argument;
      in.source = argument;
      in.uri = argument;
      GstUri* u = gst_uri_from_string(argument.c_str());
      std::string rel;
      if (u) {
        const gchar* host = gst_uri_get_host(u);
        gchar* path = gst_uri_get_path(u);
        rel = std::string(host ? host : "") + (path ? path : "");
        g_free(path);
        gst_uri_unref(u);
      }
      fs::path r = fs::path(rel).lexically_normal().relative_path();
      std::string s = r.generic_string();
      while (!s.empty() && (s.back() == '/')) s.pop_back();
      in.relative = s.empty() || s.find("..") != std::string::npos ? protocol + "/stream" : protocol + "/" + s;
      out.push_back(in);
      return;
    }
    fs::path p(argument);
    fs::path full = p.is_absolute() ? p : base / p;
    std::error_code ec;
    if (fs::is_directory(full, ec)) return folder(argument, full);
    if (fs::is_regular_file(full, ec)) return file(argument, full, full.filename().string());
    if (has_wildcard(argument)) return pattern(argument, base);
    if (fs::exists(full, ec)) return fail(argument, "not a regular file or folder");
    fail(argument, "no such file or folder");
  }
};

}  // namespace

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

int shard_of(const std::string& relative, int num_shards) {
  return static_cast<int>(fnv1a64(relative) % static_cast<uint64_t>(num_shards));
}

std::vector<Input> resolve_inputs(const std::vector<std::string>& arguments, const std::vector<std::string>& list_files,
                                  const std::vector<std::string>& extensions) {
  Resolver r{extensions, {}};
  const fs::path cwd = fs::current_path();
  for (const auto& a : arguments) r.argument(a, cwd);
  for (const auto& l : list_files) {
    std::ifstream f(l);
    if (!f) {
      r.fail(l, "cannot read the list file");
      continue;
    }
    const fs::path base = fs::absolute(fs::path(l)).parent_path();
    std::string line;
    while (std::getline(f, line)) {
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
      size_t b = 0;
      while (b < line.size() && std::isspace(static_cast<unsigned char>(line[b]))) ++b;
      line.erase(0, b);
      if (line.empty() || line[0] == '#') continue;
      r.argument(line, base);
    }
  }

  std::vector<Input> all = std::move(r.out);
  std::stable_sort(all.begin(), all.end(), [](const Input& a, const Input& b) { return a.relative < b.relative; });
  std::vector<Input> result;
  std::set<std::string> sources;
  std::map<std::string, std::string> owner;  // relative path -> source
  for (auto& in : all) {
    if (in.error.empty()) {
      if (!sources.insert(in.source).second) continue;  // the same video given twice
      auto it = owner.find(in.relative);
      if (it != owner.end()) {
        in.error = "its output path \"" + in.relative + "\" is already that of " + it->second +
                   " (give the common parent folder instead, so that relative paths differ)";
        in.uri.clear();
      } else {
        owner[in.relative] = in.source;
      }
    }
    result.push_back(std::move(in));
  }
  return result;
}

}  // namespace backbone::extract
