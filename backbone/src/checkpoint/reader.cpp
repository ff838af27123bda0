// SPDX-License-Identifier: Apache-2.0
// Checkpoint file readers: pickles (.pkl, detectron2's DetectionCheckpointer._load_file rules),
// torch.save files (zip archives and the legacy pre-1.6 stream) and safetensors.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "backbone/error.h"
#include "checkpoint/pickle.h"
#include "checkpoint/reader.h"

namespace backbone::detail {

namespace pk = pickle;

namespace {

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

std::string hex_prefix(const std::vector<uint8_t>& d, std::size_t n) {
  std::string s;
  char buf[4];
  for (std::size_t k = 0; k < n && k < d.size(); ++k) {
    std::snprintf(buf, sizeof buf, "%02x", d[k]);
    if (k) s += ' ';
    s += buf;
  }
  return s.empty() ? "(empty file)" : s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The legacy torch.save stream begins with pickle.dump(MAGIC_NUMBER, protocol=2).
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                    0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

bool is_legacy_torch(const std::vector<uint8_t>& d) {
  return d.size() >= sizeof kLegacyMagic && std::memcmp(d.data(), kLegacyMagic, sizeof kLegacyMagic) == 0;
}
bool is_zip(const std::vector<uint8_t>& d) {
  return d.size() >= 4 && d[0] == 'P' && d[1] == 'K' && ((d[2] == 3 && d[3] == 4) || (d[2] == 5 && d[3] == 6));
}

// Tensors of a pickled dict; entries that are not arrays or tensors (strings, numbers, nested
// dicts) are left out.
StateDict collect_tensors(const pk::Unpickler& u, const pk::Obj* dict, bool drop_momentum) {
  StateDict out;
  for (const auto& [k, v] : dict->dict) {
    if (!k->is_text()) continue;
    if (v->kind != pk::Kind::Array && v->kind != pk::Kind::TensorRef) continue;
    if (v->kind == pk::Kind::Array && v->non_numeric) continue;  // arrays of objects, strings, records
    const std::string name = k->text();
    if (drop_momentum && ends_with(name, "_momentum")) continue;
    out.emplace_back(name, pk::to_tensor(u, v, name));
  }
  return out;
}

const pk::Obj* expect_dict(const pk::Unpickler& u, const pk::Obj* o, const std::string& what) {
  if (o->kind != pk::Kind::Dict)
    u.fail("expected " + what + " to be a dict, found " + std::string(o->type_name()));
  return o;
}

bool truthy(const pk::Obj* o) {
  if (!o) return false;
  if (o->kind == pk::Kind::Bool) return o->b;
  if (o->kind == pk::Kind::Int) return o->i != 0;
  return false;
}

// ---- torch.save -------------------------------------------------------------------------------

RawCheckpoint torch_result(const pk::Unpickler& u, const pk::Obj* top) {
  expect_dict(u, top, "the object torch.save wrote");
  const pk::Obj* model = pk::dict_get(top, "model");
  if (model && model->kind == pk::Kind::Dict) top = model;  // detectron2 checkpoints
  RawCheckpoint raw;
  raw.tensors = collect_tensors(u, top, false);
  return raw;
}

struct StoragePid {
  DType dtype;
  std::string key;
  int64_t numel;
};

StoragePid parse_storage_pid(pk::Unpickler& u, const pk::Obj* pid, std::size_t min_items) {
  if (pid->kind != pk::Kind::Tuple || pid->items.empty() || !pid->items[0]->is_text())
    u.fail("persistent id: expected a tuple ('storage', type, key, location, numel), found a " +
           std::string(pid->type_name()));
  const std::string tag = pid->items[0]->text();
  if (tag != "storage") u.fail("persistent id '" + tag + "' is not supported (only tensors' storages are)");
  if (pid->items.size() < min_items)
    u.fail("persistent id has " + std::to_string(pid->items.size()) + " items, expected " + std::to_string(min_items));
  const pk::Obj* type = pid->items[1];
  if (type->kind != pk::Kind::Global || type->global != pk::GlobalId::TorchStorageType)
    u.fail("persistent id: expected a torch storage type such as torch.FloatStorage, found " +
           (type->kind == pk::Kind::Global ? type->global_name : std::string(type->type_name())));
  if (!pid->items[2]->is_text()) u.fail("persistent id: the storage key must be a str");
  const pk::Obj* numel = pid->items[4];
  if (numel->kind != pk::Kind::Int || numel->i < 0) u.fail("persistent id: the storage size must be a non-negative int");
  return {type->dtype, pid->items[2]->text(), numel->i};
}

// Reads a torch.save zip archive and hands its unpickled object to `done` (while the storages and
// the unpickler's objects are alive).
template <typename F>
auto visit_torch_zip(const Bytes& data, const std::string& what, F&& done) {
  const uint8_t* base = data->data();
  const std::vector<ZipEntry> entries = read_zip_directory(base, data->size(), what);
  std::map<std::string, const ZipEntry*> by_name;
  for (const auto& e : entries) by_name[e.name] = &e;
  if (entries.empty()) throw CheckpointError("torch zip file " + what + " has no entries");
  // The archive's folder is the first entry's (as PyTorch's reader takes it).
  const std::string& first = entries.front().name;
  const std::string prefix = first.substr(0, first.find('/'));
  auto entry = [&](const std::string& rel) -> const ZipEntry* {
    auto it = by_name.find(prefix + "/" + rel);
    return it == by_name.end() ? nullptr : it->second;
  };
  auto checked = [&](const ZipEntry& e) {
    if (crc32(base + e.offset, static_cast<std::size_t>(e.size)) != e.crc32)
      throw CheckpointError("torch zip file " + what + ": entry " + e.name + " fails its CRC-32 check (corrupt file)");
    return base + e.offset;
  };
  const ZipEntry* pkl = entry("data.pkl");
  if (!pkl)
    throw CheckpointError("torch zip file " + what + " has no " + prefix +
                          "/data.pkl: this is not an archive written by torch.save");
  if (const ZipEntry* bo = entry("byteorder")) {
    const std::string order(reinterpret_cast<const char*>(checked(*bo)), static_cast<std::size_t>(bo->size));
    if (order != "little")
      throw CheckpointError("torch zip file " + what + " was written on a '" + order +
                            "'-endian machine; only little-endian files are read");
  }
  pk::Unpickler u(checked(*pkl), static_cast<std::size_t>(pkl->size), what + " (" + pkl->name + ")");
  std::map<std::string, std::shared_ptr<pk::StorageData>> storages;
  u.set_persistent_load([&](pk::Unpickler& up, pk::Obj* pid) {
    const StoragePid sp = parse_storage_pid(up, pid, 5);
    auto& st = storages[sp.key];
    if (!st) {
      const ZipEntry* e = entry("data/" + sp.key);
      if (!e) up.fail("storage '" + sp.key + "' has no entry " + prefix + "/data/" + sp.key + " in the archive");
      int64_t nbytes = 0;
      if (__builtin_mul_overflow(sp.numel, static_cast<int64_t>(dtype_size(sp.dtype)), &nbytes) ||
          static_cast<uint64_t>(nbytes) > e->size)
        up.fail("storage '" + sp.key + "' of " + std::to_string(sp.numel) + " " + dtype_name(sp.dtype) +
                " elements needs more than the " + std::to_string(e->size) + " bytes of its entry");
      st = std::make_shared<pk::StorageData>();
      st->dtype = sp.dtype;
      st->numel = sp.numel;
      st->key = sp.key;
      st->buffer = data;
      st->data = checked(*e);
    } else if (st->dtype != sp.dtype) {
      up.fail("storage '" + sp.key + "' is used as " + dtype_name(st->dtype) + " and as " + dtype_name(sp.dtype));
    }
    pk::Obj* o = up.make(pk::Kind::Storage);
    o->storage = st;
    o->i = st->numel;
    return o;
  });
  const pk::Obj* top = u.load();
  return done(u, top);
}

// The same for the legacy (pre-1.6) torch.save stream.
template <typename F>
auto visit_torch_legacy(const Bytes& data, const std::string& what, F&& done) {
  pk::Unpickler u(data->data(), data->size(), what);
  const pk::Obj* magic = u.load();
  if (magic->kind != pk::Kind::BigInt || magic->bytes != std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10))
    throw CheckpointError("file " + what + " is not a torch.save file: the legacy magic number is missing");
  const pk::Obj* proto = u.load();
  if (proto->kind != pk::Kind::Int || proto->i != 1001)
    u.fail("legacy torch.save protocol " +
           (proto->kind == pk::Kind::Int ? std::to_string(proto->i) : std::string(proto->type_name())) +
           " is not supported (expected 1001)");
  const pk::Obj* sys_info = u.load();
  if (const pk::Obj* little = pk::dict_get(sys_info, "little_endian"); little && !truthy(little))
    u.fail("the file was written on a big-endian machine; only little-endian files are read");
  std::map<std::string, std::shared_ptr<pk::StorageData>> storages;
  u.set_persistent_load([&](pk::Unpickler& up, pk::Obj* pid) {
    const StoragePid sp = parse_storage_pid(up, pid, 5);
    auto& st = storages[sp.key];
    if (!st) {
      st = std::make_shared<pk::StorageData>();
      st->dtype = sp.dtype;
      st->numel = sp.numel;
      st->key = sp.key;
    } else if (st->dtype != sp.dtype || st->numel != sp.numel) {
      up.fail("storage '" + sp.key + "' is declared twice with different types or sizes");
    }
    pk::Obj* o = up.make(pk::Kind::Storage);
    o->storage = st;
    o->i = st->numel;
    const pk::Obj* view = pid->items.size() > 5 ? pid->items[5] : nullptr;
    if (view && view->kind != pk::Kind::None) {
      // (view_key, offset, view_size): a slice of the root storage
      if (view->kind != pk::Kind::Tuple || view->items.size() != 3 || view->items[1]->kind != pk::Kind::Int ||
          view->items[2]->kind != pk::Kind::Int)
        up.fail("storage view metadata must be (key, offset, size)");
      const int64_t off = view->items[1]->i, n = view->items[2]->i;
      if (off < 0 || n < 0 || off > st->numel || n > st->numel - off)
        up.fail("storage view [" + std::to_string(off) + ", +" + std::to_string(n) + ") lies outside storage '" +
                sp.key + "' of " + std::to_string(st->numel) + " elements");
      o->storage_offset = off;
      o->i = n;
    }
    return o;
  });
  const pk::Obj* top = u.load();
  u.set_persistent_load(nullptr);
  const pk::Obj* keys = u.load();
  if (keys->kind != pk::Kind::List) u.fail("expected the list of storage keys after the main pickle");
  std::size_t pos = u.position();
  const std::size_t size = data->size();
  for (const pk::Obj* k : keys->items) {
    if (!k->is_text()) u.fail("storage keys must be str");
    auto it = storages.find(k->text());
    if (it == storages.end()) u.fail("storage key '" + k->text() + "' is not used by any tensor");
    pk::StorageData& st = *it->second;
    if (size - pos < 8)
      throw CheckpointError("file " + what + " is truncated: the size of storage '" + st.key + "' is missing at byte " +
                            std::to_string(pos));
    const int64_t numel = static_cast<int64_t>(le(data->data() + pos, 8));
    pos += 8;
    if (numel != st.numel)
      throw CheckpointError("file " + what + ": storage '" + st.key + "' holds " + std::to_string(numel) +
                            " elements, the pickle says " + std::to_string(st.numel));
    const uint64_t nbytes = static_cast<uint64_t>(numel) * dtype_size(st.dtype);  // numel < 2^62 checked below
    if (numel < 0 || static_cast<uint64_t>(numel) > (size - pos) || nbytes > size - pos)
      throw CheckpointError("file " + what + " is truncated: storage '" + st.key + "' needs " + std::to_string(nbytes) +
                            " bytes at byte " + std::to_string(pos) + ", only " + std::to_string(size - pos) +
                            " are left");
    st.buffer = data;
    st.data = data->data() + pos;
    pos += static_cast<std::size_t>(nbytes);
  }
  return done(u, top);
}

RawCheckpoint read_torch(const Bytes& data, const std::string& what) {
  if (is_zip(*data)) return visit_torch_zip(data, what, torch_result);
  if (is_legacy_torch(*data)) return visit_torch_legacy(data, what, torch_result);
  if (data->size() > 262 && std::memcmp(data->data() + 257, "ustar", 5) == 0)
    throw CheckpointError("file " + what + " is a tar archive (torch.save before PyTorch 0.4): not supported");
  throw CheckpointError("file " + what +
                        " is not a torch.save file: expected a zip archive (PK\\x03\\x04) or the legacy magic number; "
                        "the first bytes are " +
                        hex_prefix(*data, 8));
}

// ---- .pkl -------------------------------------------------------------------------------------

RawCheckpoint read_pickle(const Bytes& data, const std::string& what) {
  pk::Unpickler u(data->data(), data->size(), what);
  // pickle.dump of torch tensors stores each storage as a legacy torch.save stream.
  u.set_load_from_bytes([&what](pk::Unpickler& up, const pk::Obj* b) {
    const std::string_view v = b->payload();
    auto buf = std::make_shared<const std::vector<uint8_t>>(v.begin(), v.end());
    const std::string inner = what + " (a pickled torch storage)";
    auto storage = [&](const pk::Unpickler& iu, const pk::Obj* top) {
      if (top->kind != pk::Kind::Storage) iu.fail(std::string("expected a storage, found a ") + top->type_name());
      pk::Obj* o = up.make(pk::Kind::Storage);
      o->storage = top->storage;
      o->i = top->i;
      o->storage_offset = top->storage_offset;
      return o;
    };
    if (is_zip(*buf)) return visit_torch_zip(buf, inner, storage);
    if (is_legacy_torch(*buf)) return visit_torch_legacy(buf, inner, storage);
    up.fail("torch.storage._load_from_bytes: the bytes are not a torch.save stream");
  });
  const pk::Obj* top = expect_dict(u, u.load(), "the pickled object");
  RawCheckpoint raw;
  const pk::Obj* model = pk::dict_get(top, "model");
  const pk::Obj* author = pk::dict_get(top, "__author__");
  if (model && author) {
    // detectron2 model zoo format
    expect_dict(u, model, "\"model\"");
    raw.author = author->is_text() ? author->text() : "";
    raw.matching_heuristics = truthy(pk::dict_get(top, "matching_heuristics"));
    raw.tensors = collect_tensors(u, model, false);
    return raw;
  }
  // Caffe2 / Detectron1 model zoo: detection models keep their weights under "blobs".
  const pk::Obj* blobs = pk::dict_get(top, "blobs");
  if (blobs) top = expect_dict(u, blobs, "\"blobs\"");
  raw.author = "Caffe2";
  raw.matching_heuristics = true;
  raw.tensors = collect_tensors(u, top, true);
  return raw;
}

// ---- safetensors ------------------------------------------------------------------------------

RawCheckpoint read_safetensors(const Bytes& data, const std::string& what) {
  const std::size_t size = data->size();
  if (size < 8) throw CheckpointError("safetensors file " + what + " is truncated: it has " + std::to_string(size) + " bytes");
  const uint64_t header_len = le(data->data(), 8);
  if (header_len > size - 8)
    throw CheckpointError("safetensors file " + what + ": the header announces " + std::to_string(header_len) +
                          " bytes, the file has " + std::to_string(size - 8) + " after the length");
  const char* hb = reinterpret_cast<const char*>(data->data() + 8);
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(hb, hb + header_len);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError("safetensors file " + what + ": the JSON header cannot be parsed: " + e.what());
  }
  if (!header.is_object()) throw CheckpointError("safetensors file " + what + ": the header is not a JSON object");
  static const std::map<std::string, DType> dtypes = {
      {"F64", DType::Float64}, {"F32", DType::Float32}, {"F16", DType::Float16}, {"BF16", DType::BFloat16},
      {"I64", DType::Int64},   {"I32", DType::Int32},   {"I16", DType::Int16},   {"I8", DType::Int8},
      {"U8", DType::UInt8},    {"BOOL", DType::Bool},
  };
  const uint8_t* body = data->data() + 8 + header_len;
  const uint64_t body_size = size - 8 - header_len;
  RawCheckpoint raw;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    auto bad = [&](const std::string& m) {
      return CheckpointError("safetensors file " + what + ", tensor '" + name + "': " + m);
    };
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      throw bad("expected an object with dtype, shape and data_offsets");
    const auto& jd = info["dtype"];
    if (!jd.is_string()) throw bad("dtype must be a string");
    auto dt = dtypes.find(jd.get<std::string>());
    if (dt == dtypes.end()) throw bad("unsupported dtype " + jd.get<std::string>());
    const auto& js = info["shape"];
    const auto& jo = info["data_offsets"];
    if (!js.is_array()) throw bad("shape must be an array");
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      throw bad("data_offsets must be [begin, end]");
    Shape shape;
    int64_t numel = 1;
    for (const auto& d : js) {
      if (!d.is_number_unsigned()) throw bad("shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 62) || __builtin_mul_overflow(numel, static_cast<int64_t>(v), &numel))
        throw bad("shape overflows");
      shape.push_back(static_cast<int64_t>(v));
    }
    const uint64_t b = jo[0].get<uint64_t>(), e = jo[1].get<uint64_t>();
    if (b > e || e > body_size)
      throw bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] lie outside the " +
                std::to_string(body_size) + " data bytes");
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<int64_t>(dtype_size(dt->second)), &nbytes) ||
        static_cast<uint64_t>(nbytes) != e - b)
      throw bad("shape " + shape_str(shape) + " of " + dtype_name(dt->second) + " does not fit its " +
                std::to_string(e - b) + " bytes");
    Tensor t = Tensor::empty(shape, dt->second);
    if (nbytes) std::memcpy(t.data(), body + b, static_cast<std::size_t>(nbytes));
    raw.tensors.emplace_back(name, t);
  }
  return raw;
}

}  // namespace

// ---- zip --------------------------------------------------------------------------------------

uint32_t crc32(const uint8_t* data, std::size_t size) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::vector<ZipEntry> read_zip_directory(const uint8_t* d, std::size_t n, const std::string& what) {
  auto bad = [&](const std::string& m) { return CheckpointError("zip archive " + what + ": " + m); };
  if (n < 22) throw bad("truncated: " + std::to_string(n) + " bytes cannot hold the end of central directory");
  // End of central directory: the last signature within the maximal comment length of the end.
  std::size_t eocd = n;
  const std::size_t lowest = n - 22 > 65535 ? n - 22 - 65535 : 0;
  for (std::size_t p = n - 22 + 1; p-- > lowest;) {
    if (le(d + p, 4) == 0x06054b50 && p + 22 + le(d + p + 20, 2) <= n) {
      eocd = p;
      break;
    }
  }
  if (eocd == n) throw bad("no end of central directory record (the file is truncated or not a zip archive)");
  uint64_t count = le(d + eocd + 10, 2);
  uint64_t cd_size = le(d + eocd + 12, 4);
  uint64_t cd_offset = le(d + eocd + 16, 4);
  if (eocd >= 20 && le(d + eocd - 20, 4) == 0x07064b50) {  // ZIP64 end of central directory locator
    const uint64_t z = le(d + eocd - 20 + 8, 8);
    if (z > eocd - 20 || eocd - 20 - z < 56)
      throw bad("the ZIP64 end of central directory record (at byte " + std::to_string(z) + ") lies outside the file");
    if (le(d + z, 4) != 0x06064b50) throw bad("bad ZIP64 end of central directory signature");
    count = le(d + z + 32, 8);
    cd_size = le(d + z + 40, 8);
    cd_offset = le(d + z + 48, 8);
  } else if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    throw bad("ZIP64 values without a ZIP64 end of central directory locator");
  }
  if (cd_offset > n || cd_size > n - cd_offset) throw bad("the central directory lies outside the file");
  if (count > cd_size / 46) throw bad(std::to_string(count) + " entries cannot fit a central directory of " +
                                      std::to_string(cd_size) + " bytes");
  std::vector<ZipEntry> entries;
  entries.reserve(static_cast<std::size_t>(count));
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - p < 46 || le(d + p, 4) != 0x02014b50)
      throw bad("central directory entry " + std::to_string(i) + " is damaged (bad signature at byte " + std::to_string(p) +
                ")");
    const uint64_t flags = le(d + p + 8, 2), method = le(d + p + 10, 2);
    ZipEntry e;
    e.crc32 = static_cast<uint32_t>(le(d + p + 16, 4));
    uint64_t csize = le(d + p + 20, 4), usize = le(d + p + 24, 4);
    const uint64_t name_len = le(d + p + 28, 2), extra_len = le(d + p + 30, 2), comment_len = le(d + p + 32, 2);
    uint64_t local = le(d + p + 42, 4);
    if (cd_end - p - 46 < name_len + extra_len + comment_len) throw bad("central directory entry " + std::to_string(i) + " is truncated");
    e.name.assign(reinterpret_cast<const char*>(d + p + 46), static_cast<std::size_t>(name_len));
    // ZIP64 extended information: the 64-bit values of the fields that hold 0xFFFFFFFF.
    const uint8_t* x = d + p + 46 + name_len;
    const uint8_t* xend = x + extra_len;
    while (xend - x >= 4) {
      const uint64_t id = le(x, 2), len = le(x + 2, 2);
      if (static_cast<uint64_t>(xend - x - 4) < len) throw bad("entry " + e.name + ": damaged extra field");
      if (id == 0x0001) {
        const uint8_t* q = x + 4;
        uint64_t left = len;
        auto next = [&](uint64_t& field) {
          if (left < 8) throw bad("entry " + e.name + ": short ZIP64 extra field");
          field = le(q, 8);
          q += 8;
          left -= 8;
        };
        if (usize == 0xFFFFFFFF) next(usize);
        if (csize == 0xFFFFFFFF) next(csize);
        if (local == 0xFFFFFFFF) next(local);
      }
      x += 4 + len;
    }
    if (flags & 1) throw bad("entry " + e.name + " is encrypted");
    if (method != 0)
      throw bad("entry " + e.name + " is compressed (method " + std::to_string(method) +
                "); torch.save stores its entries uncompressed");
    if (csize != usize) throw bad("stored entry " + e.name + " has different compressed and uncompressed sizes");
    if (local > n || n - local < 30 || le(d + local, 4) != 0x04034b50)
      throw bad("entry " + e.name + ": bad local header at byte " + std::to_string(local));
    const uint64_t data_start = local + 30 + le(d + local + 26, 2) + le(d + local + 28, 2);
    if (data_start > n || usize > n - data_start)
      throw bad("entry " + e.name + " (" + std::to_string(usize) + " bytes at byte " + std::to_string(data_start) +
                ") extends beyond the end of the file (" + std::to_string(n) + " bytes)");
    e.offset = data_start;
    e.size = usize;
    entries.push_back(std::move(e));
    p += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

// ---- dispatch ---------------------------------------------------------------------------------

Bytes read_file_bytes(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw CheckpointError("cannot open checkpoint file " + path + ": " + std::strerror(errno));
  auto buf = std::make_shared<std::vector<uint8_t>>();
  bool ok = std::fseek(f, 0, SEEK_END) == 0;
  const long end = ok ? std::ftell(f) : -1;
  ok = ok && end >= 0 && std::fseek(f, 0, SEEK_SET) == 0;
  if (ok) {
    buf->resize(static_cast<std::size_t>(end));
    ok = buf->empty() || std::fread(buf->data(), 1, buf->size(), f) == buf->size();
  }
  std::fclose(f);
  if (!ok) throw CheckpointError("cannot read checkpoint file " + path + ": " + std::strerror(errno));
  return buf;
}

CheckpointFormat format_from_extension(const std::string& name) {
  const auto dot = name.find_last_of('.');
  const auto slash = name.find_last_of('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return CheckpointFormat::Auto;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == "pkl") return CheckpointFormat::Pickle;
  if (ext == "pth" || ext == "pt") return CheckpointFormat::Torch;
  if (ext == "safetensors") return CheckpointFormat::SafeTensors;
  return CheckpointFormat::Auto;
}

CheckpointFormat sniff_format(const std::vector<uint8_t>& d, const std::string& name) {
  if (is_zip(d) || is_legacy_torch(d)) return CheckpointFormat::Torch;
  if (!d.empty() && d[0] == 0x80) return CheckpointFormat::Pickle;
  if (d.size() >= 10 && d[8] == '{' && le(d.data(), 8) <= d.size() - 8) return CheckpointFormat::SafeTensors;
  throw CheckpointError("cannot tell the format of checkpoint " + name +
                        ": expected a zip archive (PK), a pickle (0x80) or a safetensors header "
                        "(8-byte length, then '{'); the first bytes are " +
                        hex_prefix(d, 8));
}

RawCheckpoint read_checkpoint_bytes(const Bytes& data, const std::string& name, CheckpointFormat format) {
  if (format == CheckpointFormat::Auto) format = format_from_extension(name);
  if (format == CheckpointFormat::Auto) format = sniff_format(*data, name);
  switch (format) {
    case CheckpointFormat::Pickle: return read_pickle(data, name);
    case CheckpointFormat::Torch: return read_torch(data, name);
    case CheckpointFormat::SafeTensors: return read_safetensors(data, name);
    case CheckpointFormat::Auto: break;
  }
  throw CheckpointError("checkpoint " + name + ": unknown format");
}

}  // namespace backbone::detail

namespace backbone {

RawCheckpoint read_checkpoint_file(const std::string& path, CheckpointFormat format) {
  return detail::read_checkpoint_bytes(detail::read_file_bytes(path), path, format);
}

}  // namespace backbone
