// SPDX-License-Identifier: Apache-2.0
// Checkpoint file readers: pickles (.pkl, detectron2's DetectionCheckpointer._load_file rules),
// torch.save files (zip archives and the legacy pre-1.6 stream) and safetensors. Files are listed
// first (names, dtypes, shapes, checked against the data they claim) and their tensors
// materialised only on demand, as views of the file's bytes wherever possible.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "backbone/error.h"
#include "checkpoint/pickle.h"
#include "checkpoint/reader.h"

namespace backbone::detail {

namespace pk = pickle;

void MemoryBudget::charge(uint64_t n, const std::string& purpose) {
  if (!fits(n))
    throw CheckpointError("checkpoint " + what + ": reading it needs more memory than allowed: " + purpose + " (" +
                          std::to_string(n) + " bytes) would bring what the reader allocates beyond the file to " +
                          (n > limit ? "more than " + std::to_string(limit) : std::to_string(used + n)) +
                          " bytes, over its limit of " + std::to_string(limit) + " bytes (" + limit_reason +
                          "); shared data is never copied per reference, so this file asks for far more than the "
                          "tensors it holds");
  used += n;
}

namespace {

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

std::string hex_prefix(const uint8_t* d, std::size_t size, std::size_t n) {
  std::string s;
  char buf[4];
  for (std::size_t k = 0; k < n && k < size; ++k) {
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

bool is_legacy_torch(const uint8_t* d, std::size_t n) {
  return n >= sizeof kLegacyMagic && std::memcmp(d, kLegacyMagic, sizeof kLegacyMagic) == 0;
}
bool is_zip(const uint8_t* d, std::size_t n) {
  return n >= 4 && d[0] == 'P' && d[1] == 'K' && ((d[2] == 3 && d[3] == 4) || (d[2] == 5 && d[3] == 6));
}

bool truthy(const pk::Obj* o) {
  if (!o) return false;
  if (o->kind == pk::Kind::Bool) return o->b;
  if (o->kind == pk::Kind::Int) return o->i != 0;
  return false;
}

// A pickle whose tensors are materialised later: the unpickler (its objects) and the bytes its
// tensors refer to stay alive as long as the LazyCheckpoint.
struct PickleSession {
  std::unique_ptr<pk::Unpickler> u;
  std::map<std::string, std::shared_ptr<pk::StorageData>> storages;
  std::vector<std::shared_ptr<void>> keep;  // the torch.save stream a .pth was read from
  std::map<std::pair<const void*, std::size_t>, pk::Obj*> from_bytes;  // one parse per distinct bytes
  std::vector<const pk::Obj*> objs;  // the listed tensors
};

// The tensors of a pickled dict; entries that are not arrays or tensors (strings, numbers, nested
// dicts) are left out. Each is checked (supported dtype, data present) but not materialised.
void list_tensors(PickleSession& s, const pk::Obj* dict, bool drop_momentum, LazyCheckpoint& out) {
  for (const auto& [k, v] : dict->dict) {
    if (!k->is_text()) continue;
    if (v->kind != pk::Kind::Array && v->kind != pk::Kind::TensorRef) continue;
    if (v->kind == pk::Kind::Array && v->non_numeric) continue;  // arrays of objects, strings, records
    std::string name = k->text();
    if (drop_momentum && ends_with(name, "_momentum")) continue;
    s.u->check_tensor(v, name);
    out.tensors.push_back({std::move(name), v->dtype, v->size});
    s.objs.push_back(v);
  }
}

void finish(LazyCheckpoint& out, std::shared_ptr<PickleSession> s) {
  out.budget = s->u->budget_ptr();
  PickleSession* p = s.get();
  out.make = [p](const LazyCheckpoint& c, std::size_t i) { return p->u->materialise(p->objs[i], c.tensors[i].name); };
  out.keep = std::move(s);
}

const pk::Obj* expect_dict(const pk::Unpickler& u, const pk::Obj* o, const std::string& what) {
  if (o->kind != pk::Kind::Dict)
    u.fail("expected " + what + " to be a dict, found " + std::string(o->type_name()));
  return o;
}

// ---- torch.save -------------------------------------------------------------------------------

struct StoragePid {
  DType dtype;
  std::string key;
  int64_t numel;
};

StoragePid parse_storage_pid(pk::Unpickler& u, const pk::Obj* pid, std::size_t min_items) {
  if (pid->kind != pk::Kind::Tuple || pid->items.empty() || !pid->items[0]->is_text())
    u.fail("persistent id: expected a tuple ('storage', type, key, location, numel), found a " +
           std::string(pid->type_name()));
  if (pid->items[0]->payload() != "storage")
    u.fail("persistent id '" + pid->items[0]->text().substr(0, 64) + "' is not supported (only tensors' storages are)");
  if (pid->items.size() < min_items)
    u.fail("persistent id has " + std::to_string(pid->items.size()) + " items, expected " + std::to_string(min_items));
  const pk::Obj* type = pid->items[1];
  if (type->kind != pk::Kind::Global || type->global != pk::GlobalId::TorchStorageType)
    u.fail("persistent id: expected a torch storage type such as torch.FloatStorage, found " +
           (type->kind == pk::Kind::Global ? type->global_name : std::string(type->type_name())));
  if (!pid->items[2]->is_text()) u.fail("persistent id: the storage key must be a str");
  if (pid->items[2]->payload().size() > 256)
    u.fail("persistent id: a storage key of " + std::to_string(pid->items[2]->payload().size()) +
           " bytes (torch.save writes short keys)");
  const pk::Obj* numel = pid->items[4];
  if (numel->kind != pk::Kind::Int || numel->i < 0) u.fail("persistent id: the storage size must be a non-negative int");
  return {type->dtype, pid->items[2]->text(), numel->i};
}

// A torch.save stream (zip or legacy) read up to its main object.
struct TorchStream {
  std::unique_ptr<pk::Unpickler> u;
  std::map<std::string, std::shared_ptr<pk::StorageData>> storages;
  std::vector<ZipEntry> entries;
  std::map<std::string, const ZipEntry*> by_name;
  const pk::Obj* top = nullptr;
};

// Reads a torch.save zip archive at `base` (kept alive by `owner`).
std::unique_ptr<TorchStream> read_torch_zip(const uint8_t* base, std::size_t size, std::shared_ptr<const void> owner,
                                            const std::string& what, std::shared_ptr<MemoryBudget> budget) {
  auto ts = std::make_unique<TorchStream>();
  TorchStream* t = ts.get();
  t->entries = read_zip_directory(base, size, what);
  if (t->entries.empty()) throw CheckpointError("torch zip file " + what + " has no entries");
  for (const auto& e : t->entries) t->by_name[e.name] = &e;
  // The archive's folder is the first entry's (as PyTorch's reader takes it).
  const std::string& first = t->entries.front().name;
  const std::string prefix = first.substr(0, first.find('/'));
  auto entry = [t, prefix](const std::string& rel) -> const ZipEntry* {
    auto it = t->by_name.find(prefix + "/" + rel);
    return it == t->by_name.end() ? nullptr : it->second;
  };
  // Each entry is checked once: entries never overlap (read_zip_directory) and each storage is
  // looked up once, so the CRC work is at most the size of the file.
  auto checked = [base, what](const ZipEntry& e) {
    if (crc32(base + e.offset, static_cast<std::size_t>(e.size)) != e.crc32)
      throw CheckpointError("torch zip file " + what + ": entry " + e.name + " fails its CRC-32 check (corrupt file)");
    return base + e.offset;
  };
  const ZipEntry* pkl = entry("data.pkl");
  if (!pkl)
    throw CheckpointError("torch zip file " + what + " has no " + prefix +
                          "/data.pkl: this is not an archive written by torch.save");
  if (const ZipEntry* bo = entry("byteorder")) {
    const std::string order(reinterpret_cast<const char*>(checked(*bo)),
                            static_cast<std::size_t>(std::min<uint64_t>(bo->size, 64)));
    if (order != "little")
      throw CheckpointError("torch zip file " + what + " was written on a '" + order +
                            "'-endian machine; only little-endian files are read");
  }
  t->u = std::make_unique<pk::Unpickler>(checked(*pkl), static_cast<std::size_t>(pkl->size),
                                         what + " (" + pkl->name + ")", owner, std::move(budget));
  t->u->set_persistent_load([t, entry, checked, prefix, owner](pk::Unpickler& up, pk::Obj* pid) {
    const StoragePid sp = parse_storage_pid(up, pid, 5);
    auto& st = t->storages[sp.key];
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
      st->buffer = owner;
      st->data = checked(*e);
    } else if (st->dtype != sp.dtype) {
      up.fail("storage '" + sp.key + "' is used as " + dtype_name(st->dtype) + " and as " + dtype_name(sp.dtype));
    }
    pk::Obj* o = up.make(pk::Kind::Storage);
    o->storage = st;
    o->i = st->numel;
    return o;
  });
  t->top = t->u->load();
  return ts;
}

// The same for the legacy (pre-1.6) torch.save stream.
std::unique_ptr<TorchStream> read_torch_legacy(const uint8_t* base, std::size_t size, std::shared_ptr<const void> owner,
                                               const std::string& what, std::shared_ptr<MemoryBudget> budget) {
  auto ts = std::make_unique<TorchStream>();
  TorchStream* t = ts.get();
  t->u = std::make_unique<pk::Unpickler>(base, size, what, owner, std::move(budget));
  pk::Unpickler& u = *t->u;
  const pk::Obj* magic = u.load();
  if (magic->kind != pk::Kind::BigInt || magic->bytes != std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10))
    throw CheckpointError("file " + what + " is not a torch.save file: the legacy magic number is missing");
  const pk::Obj* proto = u.load();
  if (proto->kind != pk::Kind::Int || proto->i != 1001)
    u.fail("legacy torch.save protocol " +
           (proto->kind == pk::Kind::Int ? std::to_string(proto->i) : std::string(proto->type_name())) +
           " is not supported (expected 1001)");
  const pk::Obj* sys_info = u.load();
  if (const pk::Obj* little = u.get(sys_info, "little_endian"); little && !truthy(little))
    u.fail("the file was written on a big-endian machine; only little-endian files are read");
  u.set_persistent_load([t](pk::Unpickler& up, pk::Obj* pid) {
    const StoragePid sp = parse_storage_pid(up, pid, 5);
    auto& st = t->storages[sp.key];
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
  t->top = u.load();
  u.set_persistent_load(nullptr);
  const pk::Obj* keys = u.load();
  if (keys->kind != pk::Kind::List) u.fail("expected the list of storage keys after the main pickle");
  std::size_t pos = u.position();
  for (const pk::Obj* k : keys->items) {
    if (!k->is_text()) u.fail("storage keys must be str");
    auto it = t->storages.find(k->text());
    if (it == t->storages.end()) u.fail("storage key '" + k->text().substr(0, 64) + "' is not used by any tensor");
    pk::StorageData& st = *it->second;
    if (size - pos < 8)
      throw CheckpointError("file " + what + " is truncated: the size of storage '" + st.key + "' is missing at byte " +
                            std::to_string(pos));
    const int64_t numel = static_cast<int64_t>(le(base + pos, 8));
    pos += 8;
    if (numel != st.numel)
      throw CheckpointError("file " + what + ": storage '" + st.key + "' holds " + std::to_string(numel) +
                            " elements, the pickle says " + std::to_string(st.numel));
    if (numel < 0 || static_cast<uint64_t>(numel) > (size - pos) ||
        static_cast<uint64_t>(numel) * dtype_size(st.dtype) > size - pos)  // numel <= size: no overflow
      throw CheckpointError("file " + what + " is truncated: storage '" + st.key + "' needs " +
                            std::to_string(static_cast<uint64_t>(numel) * dtype_size(st.dtype)) + " bytes at byte " +
                            std::to_string(pos) + ", only " + std::to_string(size - pos) + " are left");
    st.buffer = owner;
    st.data = base + pos;
    pos += static_cast<std::size_t>(numel) * dtype_size(st.dtype);
  }
  return ts;
}

std::unique_ptr<TorchStream> read_torch_stream(const uint8_t* p, std::size_t n, std::shared_ptr<const void> owner,
                                               const std::string& what, std::shared_ptr<MemoryBudget> budget) {
  if (is_zip(p, n)) return read_torch_zip(p, n, std::move(owner), what, std::move(budget));
  if (is_legacy_torch(p, n)) return read_torch_legacy(p, n, std::move(owner), what, std::move(budget));
  if (n > 262 && std::memcmp(p + 257, "ustar", 5) == 0)
    throw CheckpointError("file " + what + " is a tar archive (torch.save before PyTorch 0.4): not supported");
  throw CheckpointError("file " + what +
                        " is not a torch.save file: expected a zip archive (PK\\x03\\x04) or the legacy magic number; "
                        "the first bytes are " +
                        hex_prefix(p, n, 8));
}

LazyCheckpoint open_torch(const Bytes& data, const std::string& what, std::shared_ptr<MemoryBudget> budget) {
  std::shared_ptr<TorchStream> ts = read_torch_stream(data->data(), data->size(), data, what, std::move(budget));
  auto s = std::make_shared<PickleSession>();
  s->keep.push_back(ts);
  const pk::Obj* top = expect_dict(*ts->u, ts->top, "the object torch.save wrote");
  const pk::Obj* model = ts->u->get(top, "model");
  if (model && model->kind == pk::Kind::Dict) top = model;  // detectron2 checkpoints
  // The session's unpickler is the stream's (owned through `keep`).
  s->u.reset(ts->u.release());
  LazyCheckpoint out;
  list_tensors(*s, top, false, out);
  finish(out, std::move(s));
  return out;
}

// ---- .pkl -------------------------------------------------------------------------------------

LazyCheckpoint open_pickle(const Bytes& data, const std::string& what, std::shared_ptr<MemoryBudget> budget) {
  auto s = std::make_shared<PickleSession>();
  s->u = std::make_unique<pk::Unpickler>(data->data(), data->size(), what, data, std::move(budget));
  pk::Unpickler& u = *s->u;
  // pickle.dump of torch tensors stores each storage as a torch.save stream in a bytes object;
  // each distinct bytes object is read once (and not copied), however often it is referenced.
  PickleSession* sp = s.get();
  u.set_load_from_bytes([sp, what](pk::Unpickler& up, const pk::Obj* b) -> pk::Obj* {
    const pk::Unpickler::Span bytes{reinterpret_cast<const uint8_t*>(up.data(b).data()), up.data(b).size(),
                                    up.data_owner(b)};
    const auto key = std::make_pair(static_cast<const void*>(bytes.p), bytes.n);
    if (auto it = sp->from_bytes.find(key); it != sp->from_bytes.end()) return it->second;
    const uint8_t* p = bytes.p;
    std::shared_ptr<const void> owner = bytes.owner;
    if (!owner) {  // bytes held by the unpickler's objects (short or decoded text): a copy the tensors can own
      up.budget().charge(bytes.n, "a copy of a pickled torch storage");
      auto copy = std::make_shared<std::vector<uint8_t>>(bytes.p, bytes.p + bytes.n);
      p = copy->data();
      owner = std::move(copy);
    }
    std::unique_ptr<TorchStream> inner =
        read_torch_stream(p, bytes.n, owner, what + " (a pickled torch storage)", up.budget_ptr());
    if (inner->top->kind != pk::Kind::Storage)
      inner->u->fail(std::string("expected a storage, found a ") + inner->top->type_name());
    pk::Obj* o = up.make(pk::Kind::Storage);
    o->storage = inner->top->storage;
    o->i = inner->top->i;
    o->storage_offset = inner->top->storage_offset;
    sp->from_bytes.emplace(key, o);
    return o;
  });
  const pk::Obj* top = expect_dict(u, u.load(), "the pickled object");
  LazyCheckpoint out;
  const pk::Obj* model = u.get(top, "model");
  const pk::Obj* author = u.get(top, "__author__");
  if (model && author) {
    // detectron2 model zoo format
    expect_dict(u, model, "\"model\"");
    out.author = author->is_text() ? author->text() : "";
    out.matching_heuristics = truthy(u.get(top, "matching_heuristics"));
    list_tensors(*s, model, false, out);
  } else {
    // Caffe2 / Detectron1 model zoo: detection models keep their weights under "blobs".
    const pk::Obj* blobs = u.get(top, "blobs");
    if (blobs) top = expect_dict(u, blobs, "\"blobs\"");
    out.author = "Caffe2";
    out.matching_heuristics = true;
    list_tensors(*s, top, true, out);
  }
  finish(out, std::move(s));
  return out;
}

// ---- safetensors ------------------------------------------------------------------------------

// The format's own limit on the JSON header (safetensors' MAX_HEADER_SIZE).
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;
// The header is {name: {dtype, shape: [...], data_offsets: [b, e]}, "__metadata__": {str: str}}:
// nothing nests deeper than 3, and a shape has at most pk::kMaxDims entries. Values are capped so
// that the parsed header stays near the size of its text.
constexpr int kMaxSafetensorsDepth = 3;
constexpr std::size_t kMaxSafetensorsValues = std::size_t{1} << 22;

struct SafetensorsEntry {
  uint64_t begin, end;
};

LazyCheckpoint open_safetensors(const Bytes& data, const std::string& what, std::shared_ptr<MemoryBudget> budget) {
  const std::size_t size = data->size();
  if (size < 8) throw CheckpointError("safetensors file " + what + " is truncated: it has " + std::to_string(size) + " bytes");
  const uint64_t header_len = le(data->data(), 8);
  if (header_len > size - 8)
    throw CheckpointError("safetensors file " + what + ": the header announces " + std::to_string(header_len) +
                          " bytes, the file has " + std::to_string(size - 8) + " after the length");
  if (header_len > kMaxSafetensorsHeader)
    throw CheckpointError("safetensors file " + what + ": the header announces " + std::to_string(header_len) +
                          " bytes, more than the format's limit of " + std::to_string(kMaxSafetensorsHeader));
  const char* hb = reinterpret_cast<const char*>(data->data() + 8);
  nlohmann::ordered_json header;
  std::set<std::string> names;
  std::size_t values = 0;
  auto bad_header = [&](const std::string& m) { return CheckpointError("safetensors file " + what + ": " + m); };
  // Duplicate tensor names are refused (safetensors' loader keeps one of them, and the other's
  // bytes become a hole it refuses); depth and size are bounded while parsing.
  auto cb = [&](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
    using E = nlohmann::ordered_json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= kMaxSafetensorsDepth)
      throw bad_header("the header nests deeper than " + std::to_string(kMaxSafetensorsDepth) +
                       " levels ({name: {\"shape\": [...]}})");
    if (++values > kMaxSafetensorsValues)
      throw bad_header("the header holds more than " + std::to_string(kMaxSafetensorsValues) + " JSON values");
    if (event == E::key && depth == 1 && !names.insert(parsed.get<std::string>()).second)
      throw bad_header("tensor '" + parsed.get<std::string>() + "' is named twice in the header");
    return true;
  };
  try {
    header = nlohmann::ordered_json::parse(hb, hb + header_len, cb);
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
  LazyCheckpoint out;
  out.budget = std::move(budget);
  std::vector<SafetensorsEntry> spans;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const auto& info = item.value();
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
    if (js.size() > pk::kMaxDims)
      throw bad("shape has " + std::to_string(js.size()) + " dimensions, at most " + std::to_string(pk::kMaxDims) +
                " are supported");
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
    if (!pk::strides_fit(shape)) throw bad("shape " + shape_str(shape) + " overflows (its strides do not fit an int64)");
    const uint64_t b = jo[0].get<uint64_t>(), e = jo[1].get<uint64_t>();
    if (b > e || e > body_size)
      throw bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] lie outside the " +
                std::to_string(body_size) + " data bytes");
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<int64_t>(dtype_size(dt->second)), &nbytes) ||
        static_cast<uint64_t>(nbytes) != e - b)
      throw bad("shape " + shape_str(shape) + " of " + dtype_name(dt->second) + " does not fit its " +
                std::to_string(e - b) + " bytes");
    out.tensors.push_back({name, dt->second, shape});
    spans.push_back({b, e});
  }
  // The format's layout rule (safetensors' Metadata::validate): ordered by offset, the tensors
  // cover the data exactly, without overlaps or holes.
  std::vector<std::size_t> order(spans.size());
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    return spans[x].begin != spans[y].begin ? spans[x].begin < spans[y].begin : spans[x].end < spans[y].end;
  });
  uint64_t at = 0;
  std::string previous;
  for (std::size_t k : order) {
    const auto& [b, e] = spans[k];
    if (b != at)
      throw CheckpointError("safetensors file " + what + ", tensor '" + out.tensors[k].name + "': data_offsets [" +
                            std::to_string(b) + ", " + std::to_string(e) + "] " +
                            (b < at ? "overlap the data of tensor '" + previous + "'"
                                    : "leave a hole of " + std::to_string(b - at) + " bytes after byte " +
                                          std::to_string(at)) +
                            ": the format requires the tensors to cover the data in order, without overlaps or holes");
    at = e;
    previous = out.tensors[k].name;
  }
  if (at != body_size)
    throw CheckpointError("safetensors file " + what + ": the tensors' data ends at byte " + std::to_string(at) +
                          " of the " + std::to_string(body_size) +
                          " data bytes; the format requires them to cover the data exactly");
  auto make = [data, body, spans](const LazyCheckpoint& c, std::size_t i) {
    const LazyTensor& t = c.tensors[i];
    const uint8_t* p = body + spans[i].begin;
    if (reinterpret_cast<std::uintptr_t>(p) % dtype_size(t.dtype) == 0)
      return Tensor::from_blob(const_cast<uint8_t*>(p), t.shape, t.dtype, Device::cpu(),
                               std::const_pointer_cast<std::vector<uint8_t>>(data));
    c.budget->charge(spans[i].end - spans[i].begin, "a copy of tensor '" + t.name + "' (its data is not aligned)");
    Tensor copy = Tensor::empty(t.shape, t.dtype);
    if (copy.nbytes()) std::memcpy(copy.data(), p, copy.nbytes());
    return copy;
  };
  out.make = make;
  return out;
}

}  // namespace

LazyCheckpoint open_checkpoint_bytes(const Bytes& data, const std::string& name, CheckpointFormat format,
                                     std::shared_ptr<MemoryBudget> budget) {
  if (!budget) budget = std::make_shared<MemoryBudget>();
  if (budget->what.empty()) budget->what = name;
  if (format == CheckpointFormat::Auto) format = format_from_extension(name);
  if (format == CheckpointFormat::Auto) format = sniff_format(*data, name);
  switch (format) {
    case CheckpointFormat::Pickle: return open_pickle(data, name, std::move(budget));
    case CheckpointFormat::Torch: return open_torch(data, name, std::move(budget));
    case CheckpointFormat::SafeTensors: return open_safetensors(data, name, std::move(budget));
    case CheckpointFormat::Auto: break;
  }
  throw CheckpointError("checkpoint " + name + ": unknown format");
}

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
    e.record = local;
    entries.push_back(std::move(e));
    p += 46 + name_len + extra_len + comment_len;
  }
  // Entries whose records overlap (directory entries aliasing one record, or data running into
  // the next record) are refused, as Python's zipfile refuses them ("Overlapped entries"): each
  // byte of the file then belongs to at most one entry, so checking every entry's CRC-32 costs at
  // most one pass over the file. Duplicate names are refused too (which one would count?).
  std::vector<const ZipEntry*> by_offset(entries.size());
  for (std::size_t k = 0; k < entries.size(); ++k) by_offset[k] = &entries[k];
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipEntry* a, const ZipEntry* b) { return a->record < b->record; });
  for (std::size_t k = 1; k < by_offset.size(); ++k) {
    const ZipEntry& prev = *by_offset[k - 1];
    const ZipEntry& cur = *by_offset[k];
    if (cur.record < prev.offset + prev.size)
      throw bad("entries " + prev.name + " and " + cur.name + " overlap (the record at byte " +
                std::to_string(cur.record) + " lies inside the one at byte " + std::to_string(prev.record) +
                ", whose data ends at byte " + std::to_string(prev.offset + prev.size) + ")");
  }
  if (!by_offset.empty() && by_offset.back()->offset + by_offset.back()->size > cd_offset)
    throw bad("entry " + by_offset.back()->name + " (data up to byte " +
              std::to_string(by_offset.back()->offset + by_offset.back()->size) +
              ") overlaps the central directory at byte " + std::to_string(cd_offset));
  std::vector<const ZipEntry*> by_name = by_offset;
  std::sort(by_name.begin(), by_name.end(), [](const ZipEntry* a, const ZipEntry* b) { return a->name < b->name; });
  for (std::size_t k = 1; k < by_name.size(); ++k)
    if (by_name[k]->name == by_name[k - 1]->name) throw bad("two entries are named " + by_name[k]->name);
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
  if (is_zip(d.data(), d.size()) || is_legacy_torch(d.data(), d.size())) return CheckpointFormat::Torch;
  if (!d.empty() && d[0] == 0x80) return CheckpointFormat::Pickle;
  if (d.size() >= 10 && d[8] == '{' && le(d.data(), 8) <= d.size() - 8) return CheckpointFormat::SafeTensors;
  throw CheckpointError("cannot tell the format of checkpoint " + name +
                        ": expected a zip archive (PK), a pickle (0x80) or a safetensors header "
                        "(8-byte length, then '{'); the first bytes are " +
                        hex_prefix(d.data(), d.size(), 8));
}

RawCheckpoint read_checkpoint_bytes(const Bytes& data, const std::string& name, CheckpointFormat format) {
  // Everything is materialised: the bound is the file's size + kRawReadSlack beyond the file.
  auto budget = std::make_shared<MemoryBudget>();
  budget->limit = data->size() + kRawReadSlack;
  budget->limit_reason = "the file's size + 64 MiB";
  const LazyCheckpoint lazy = open_checkpoint_bytes(data, name, format, budget);
  RawCheckpoint raw;
  raw.author = lazy.author;
  raw.matching_heuristics = lazy.matching_heuristics;
  for (std::size_t i = 0; i < lazy.tensors.size(); ++i) raw.tensors.emplace_back(lazy.tensors[i].name, lazy.make(lazy, i));
  raw.materialised_bytes = budget->used;
  return raw;
}

}  // namespace backbone::detail

namespace backbone {

RawCheckpoint read_checkpoint_file(const std::string& path, CheckpointFormat format) {
  return detail::read_checkpoint_bytes(detail::read_file_bytes(path), path, format);
}

}  // namespace backbone
