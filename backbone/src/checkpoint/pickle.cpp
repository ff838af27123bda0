// SPDX-License-Identifier: Apache-2.0
// The restricted pickle reader: see pickle.h. The opcodes follow CPython's Lib/pickle.py
// (protocols 0 to 5); the allowed globals are reconstructed here, never looked up or called.
#include "checkpoint/pickle.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

#include "backbone/error.h"
#include "core/utf8.h"

namespace backbone::detail::pickle {

namespace {

// Caps on what one pickle may build; real checkpoints stay far below (a detectron2 training
// checkpoint with its optimizer state has a few tens of thousands of objects). They bound the
// reader's own memory to a few hundred MB whatever the file.
constexpr std::size_t kMaxObjects = std::size_t{1} << 20;
constexpr std::size_t kMaxStack = std::size_t{1} << 21;
// Container items copied by constructors (OrderedDict(d), set(l)), all calls together: without a
// cap, calling OrderedDict on one large memoized dict again and again copies it each time.
constexpr std::size_t kMaxCopiedItems = std::size_t{1} << 22;
// Text that names a global, a numpy dtype, an encoding or a storage is short; longer text there is
// refused rather than copied per reference.
constexpr std::size_t kMaxNameText = 256;
// Bytes at least this long refer to the input rather than being copied.
constexpr std::size_t kViewFrom = 1024;

using detail::append_utf8;

std::string latin1_to_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) append_utf8(out, c);
  return out;
}

// UTF-8 text -> latin-1 bytes: 0 on success, 1 for malformed UTF-8, 2 for a character above U+00FF.
int utf8_to_latin1(std::string_view s, std::string& out) {
  out.clear();
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    int extra = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      cp = c & 0x1F;
      extra = 1;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F;
      extra = 2;
    } else if ((c & 0xF8) == 0xF0) {
      cp = c & 0x07;
      extra = 3;
    } else {
      return 1;
    }
    if (i + extra >= s.size()) return 1;
    for (int k = 1; k <= extra; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return 1;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp > 0xFF) return 2;
    out += static_cast<char>(cp);
    i += 1 + extra;
  }
  return 0;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct StorageType {
  const char* name;
  DType dtype;
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", DType::Float32}, {"HalfStorage", DType::Float16},  {"BFloat16Storage", DType::BFloat16},
    {"DoubleStorage", DType::Float64}, {"LongStorage", DType::Int64},   {"IntStorage", DType::Int32},
    {"ShortStorage", DType::Int16},   {"CharStorage", DType::Int8},     {"ByteStorage", DType::UInt8},
    {"BoolStorage", DType::Bool},     {"UntypedStorage", DType::UInt8},
};

bool checked_mul(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

}  // namespace

bool strides_fit(const Shape& shape) {
  int64_t s = 1;
  for (std::size_t k = 1; k < shape.size(); ++k)
    if (shape[k] > 1 && !checked_mul(s, shape[k], s)) return false;
  return true;
}

std::string Obj::text() const {
  if (kind == Kind::Bytes && py2_str) return latin1_to_utf8(std::string(payload()));
  return std::string(payload());
}

const char* Obj::type_name() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int:
    case Kind::BigInt: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return py2_str ? "str (Python 2)" : "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Set: return "set";
    case Kind::Global: return "global";
    case Kind::DType: return "numpy.dtype";
    case Kind::Array: return "numpy.ndarray";
    case Kind::Storage: return "torch storage";
    case Kind::TensorRef: return "torch.Tensor";
  }
  return "object";
}

Unpickler::Unpickler(const uint8_t* data, std::size_t size, std::string what, std::shared_ptr<const void> owner,
                     std::shared_ptr<MemoryBudget> budget)
    : data_(data), size_(size), what_(std::move(what)), owner_(std::move(owner)), budget_(std::move(budget)) {
  if (!budget_) budget_ = std::make_shared<MemoryBudget>();
}

void Unpickler::fail(const std::string& message) const {
  throw CheckpointError("pickle " + what_ + ", byte " + std::to_string(op_start_) + ": " + message);
}

Obj* Unpickler::make(Kind kind) {
  if (objects_ >= kMaxObjects)
    fail("more than " + std::to_string(kMaxObjects) + " objects; this is not a checkpoint this reader accepts");
  if (chunk_used_ == chunk_size_) {
    chunk_size_ = std::min<std::size_t>(chunk_size_ ? 2 * chunk_size_ : 16, 256);  // under malloc's mmap threshold
    chunks_.push_back(std::unique_ptr<Obj[]>(new Obj[chunk_size_]));
    chunk_used_ = 0;
  }
  ++objects_;
  Obj* o = &chunks_.back()[chunk_used_++];
  o->kind = kind;
  return o;
}

uint8_t Unpickler::read_u8() {
  if (pos_ >= size_) {
    op_start_ = pos_;
    fail("truncated: the data ends (" + std::to_string(size_) + " bytes) before the pickle's STOP opcode");
  }
  return data_[pos_++];
}

const uint8_t* Unpickler::read_bytes(uint64_t n, const char* opcode) {
  if (n > size_ - pos_)
    fail(std::string("truncated: ") + opcode + " needs " + std::to_string(n) + " bytes, only " +
         std::to_string(size_ - pos_) + " are left");
  const uint8_t* p = data_ + pos_;
  pos_ += static_cast<std::size_t>(n);
  return p;
}

uint64_t Unpickler::read_uint(int nbytes, const char* opcode) {
  const uint8_t* p = read_bytes(static_cast<uint64_t>(nbytes), opcode);
  uint64_t v = 0;
  for (int k = nbytes - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

std::string Unpickler::read_line(const char* opcode) {
  const std::size_t start = pos_;
  while (pos_ < size_ && data_[pos_] != '\n') ++pos_;
  if (pos_ >= size_) fail(std::string("truncated: ") + opcode + " has no end of line");
  std::string line(reinterpret_cast<const char*>(data_ + start), pos_ - start);
  ++pos_;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

void Unpickler::push(Obj* o) {
  if (stack_.size() >= kMaxStack) fail("the stack grows beyond " + std::to_string(kMaxStack) + " entries");
  stack_.push_back(o);
}

Obj* Unpickler::pop() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("pop from an empty stack");
  Obj* o = stack_.back();
  stack_.pop_back();
  return o;
}

Obj* Unpickler::top() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("the stack is empty");
  return stack_.back();
}

std::vector<Obj*> Unpickler::pop_mark() {
  if (marks_.empty()) fail("no MARK on the stack");
  const std::size_t m = marks_.back();
  marks_.pop_back();
  std::vector<Obj*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
  stack_.resize(m);
  return items;
}

void Unpickler::memo_put(uint64_t index, Obj* o) {
  // Python's pickler numbers the memo 0, 1, 2, ...: an index beyond the object limit cannot come
  // from it. The memo is then a plain array (no hashing an attacker could make collide).
  if (index >= kMaxObjects)
    fail("memo index " + std::to_string(index) + " is beyond the limit of " + std::to_string(kMaxObjects) + " entries");
  if (index >= memo_.size()) memo_.resize(static_cast<std::size_t>(index) + 1, nullptr);
  if (!memo_[index]) ++memo_count_;
  memo_[index] = o;
}

Obj* Unpickler::memo_get(uint64_t index) {
  if (index >= memo_.size() || !memo_[index]) fail("memo entry " + std::to_string(index) + " was never stored");
  return memo_[index];
}

Obj* Unpickler::make_int(int64_t v) {
  Obj* o = make(Kind::Int);
  o->i = v;
  return o;
}

Obj* Unpickler::make_long(const uint8_t* p, std::size_t n) {
  if (n == 0) return make_int(0);
  const bool negative = (p[n - 1] & 0x80) != 0;
  bool fits = true;
  for (std::size_t k = 8; k < n; ++k)
    if (p[k] != (negative ? 0xFF : 0x00)) fits = false;
  if (n > 8 && fits && (((p[7] & 0x80) != 0) != negative)) fits = false;
  if (!fits) {
    Obj* o = make(Kind::BigInt);
    o->bytes.assign(reinterpret_cast<const char*>(p), n);
    return o;
  }
  uint64_t v = negative ? ~uint64_t{0} : 0;
  const std::size_t m = n < 8 ? n : 8;
  for (std::size_t k = 0; k < m; ++k) {
    v &= ~(uint64_t{0xFF} << (8 * k));
    v |= uint64_t{p[k]} << (8 * k);
  }
  return make_int(static_cast<int64_t>(v));
}

Obj* Unpickler::make_bytes(const uint8_t* p, std::size_t n, bool py2_str, bool from_input) {
  Obj* o = make(Kind::Bytes);
  if (from_input && n >= kViewFrom) {
    o->view = p;
    o->view_size = n;
  } else {
    o->bytes.assign(reinterpret_cast<const char*>(p), n);
  }
  o->py2_str = py2_str;
  return o;
}

Obj* Unpickler::make_str(std::string s) {
  Obj* o = make(Kind::Str);
  o->bytes = std::move(s);
  return o;
}

Obj* Unpickler::make_str_view(const uint8_t* p, std::size_t n) {
  if (n < kViewFrom) return make_str(std::string(reinterpret_cast<const char*>(p), n));
  Obj* o = make(Kind::Str);
  o->view = p;
  o->view_size = n;
  return o;
}

void Unpickler::count_items(std::size_t n) {
  if (n > kMaxCopiedItems - items_)
    fail("the pickle copies more than " + std::to_string(kMaxCopiedItems) +
         " container items (OrderedDict / set of an existing container); this is not a checkpoint this reader "
         "accepts");
  items_ += n;
}

uint32_t Unpickler::key_id(Obj* key) {
  if (key->key_id) return key->key_id;
  if (!key->is_text()) return 0;
  std::string_view text;
  if (key->kind == Kind::Str) {
    text = key->payload();
  } else {  // a Python 2 str: its text is decoded once
    key->text_cache = key->text();
    text = key->text_cache;
  }
  auto [it, fresh] = interned_.emplace(text, static_cast<uint32_t>(interned_.size() + 1));
  key->key_id = it->second;
  return key->key_id;
}

std::string_view Unpickler::data(const Obj* b) {
  if (b->latin1_of && !b->view) {
    Obj* o = const_cast<Obj*>(b);
    budget_->charge(o->view_size, "the latin-1 bytes of a str (_codecs.encode)");
    auto buf = std::make_shared<std::vector<uint8_t>>();
    std::string out;
    utf8_to_latin1(b->latin1_of->payload(), out);
    buf->assign(out.begin(), out.end());
    o->decoded = buf;
    o->view = buf->data();
    o->view_size = buf->size();
  }
  return b->payload();
}

std::shared_ptr<const void> Unpickler::data_owner(const Obj* b) const {
  if (b->decoded) return b->decoded;
  const auto v = reinterpret_cast<std::uintptr_t>(b->view), d = reinterpret_cast<std::uintptr_t>(data_);
  if (b->view && v >= d && v - d < size_) return owner_;
  return nullptr;  // the object's own bytes (or another object's): they live in the arena
}

Obj* Unpickler::get(const Obj* dict, std::string_view key) const {
  if (!dict || dict->kind != Kind::Dict || !dict->index) return nullptr;
  auto id = interned_.find(key);
  if (id == interned_.end()) return nullptr;
  auto it = dict->index->find(id->second);
  return it == dict->index->end() ? nullptr : dict->dict[it->second].second;
}

Obj* Unpickler::resolve_global(const std::string& module, const std::string& name) {
  static const std::map<std::pair<std::string, std::string>, GlobalId> table = {
      {{"numpy.core.multiarray", "_reconstruct"}, GlobalId::NumpyReconstruct},
      {{"numpy._core.multiarray", "_reconstruct"}, GlobalId::NumpyReconstruct},
      {{"numpy", "ndarray"}, GlobalId::NumpyNdarray},
      {{"numpy", "dtype"}, GlobalId::NumpyDtype},
      {{"numpy.core.multiarray", "scalar"}, GlobalId::NumpyScalar},
      {{"numpy._core.multiarray", "scalar"}, GlobalId::NumpyScalar},
      {{"numpy.core.numeric", "_frombuffer"}, GlobalId::NumpyFrombuffer},
      {{"numpy._core.numeric", "_frombuffer"}, GlobalId::NumpyFrombuffer},
      {{"_codecs", "encode"}, GlobalId::CodecsEncode},
      {{"collections", "OrderedDict"}, GlobalId::OrderedDict},
      {{"builtins", "set"}, GlobalId::Set},
      {{"__builtin__", "set"}, GlobalId::Set},
      {{"builtins", "frozenset"}, GlobalId::FrozenSet},
      {{"__builtin__", "frozenset"}, GlobalId::FrozenSet},
      {{"builtins", "bytearray"}, GlobalId::ByteArray},
      {{"__builtin__", "bytearray"}, GlobalId::ByteArray},
      {{"torch._utils", "_rebuild_tensor"}, GlobalId::TorchRebuildTensor},
      {{"torch._utils", "_rebuild_tensor_v2"}, GlobalId::TorchRebuildTensorV2},
      {{"torch._utils", "_rebuild_parameter"}, GlobalId::TorchRebuildParameter},
      {{"torch._utils", "_rebuild_parameter_with_state"}, GlobalId::TorchRebuildParameterWithState},
      {{"torch._tensor", "_rebuild_from_type_v2"}, GlobalId::TorchRebuildFromTypeV2},
      {{"torch", "Tensor"}, GlobalId::TorchTensorType},
      {{"torch._tensor", "Tensor"}, GlobalId::TorchTensorType},
      {{"torch.nn.parameter", "Parameter"}, GlobalId::TorchTensorType},
      {{"torch.storage", "_load_from_bytes"}, GlobalId::TorchLoadFromBytes},
  };
  Obj* o = nullptr;
  auto it = table.find({module, name});
  if (it != table.end()) {
    o = make(Kind::Global);
    o->global = it->second;
  } else if (module == "torch" || module == "torch.storage") {
    for (const auto& st : kStorageTypes) {
      if (name == st.name && (module == "torch" || name == std::string("UntypedStorage"))) {
        o = make(Kind::Global);
        o->global = GlobalId::TorchStorageType;
        o->dtype = st.dtype;
      }
    }
  }
  if (!o && (module == "torch" || module == "torch.storage") && name.size() > 7 &&
      name.compare(name.size() - 7, 7, "Storage") == 0)
    fail("torch storage type '" + module + "." + name +
         "' is not supported (float, bfloat16, int and bool storages are)");
  if (!o)
    throw CheckpointError("forbidden global '" + module + "." + name + "' in pickle " + what_ + " (byte " +
                          std::to_string(op_start_) +
                          "): this reader only rebuilds numpy arrays, torch tensors and plain containers, and runs "
                          "no code");
  o->global_name = module + "." + name;
  return o;
}

Obj* Unpickler::make_dtype(Obj* descr) {
  if (!descr->is_text()) fail(std::string("numpy.dtype() expects a type string, found ") + descr->type_name());
  if (descr->payload().size() > kMaxNameText)
    fail("numpy.dtype() expects a type string such as '<f4', found " + std::to_string(descr->payload().size()) +
         " bytes of text");
  std::string s = descr->text();
  Obj* d = make(Kind::DType);
  d->dtype_descr = s;
  if (!s.empty() && (s[0] == '<' || s[0] == '>' || s[0] == '=' || s[0] == '|')) {
    d->big_endian = s[0] == '>';
    s = s.substr(1);
  }
  static const std::map<std::string, DType> known = {
      {"f2", DType::Float16}, {"f4", DType::Float32}, {"f8", DType::Float64}, {"i1", DType::Int8},
      {"i2", DType::Int16},   {"i4", DType::Int32},   {"i8", DType::Int64},   {"u1", DType::UInt8},
      {"b1", DType::Bool},
  };
  auto it = known.find(s);
  if (it == known.end()) {
    d->dtype_supported = false;
  } else {
    d->dtype = it->second;
  }
  return d;
}

void Unpickler::fill_array(Obj* array, const Shape& shape, Obj* dtype, bool fortran, Obj* data) {
  if (dtype->kind != Kind::DType) fail(std::string("numpy array state: expected a numpy.dtype, found ") + dtype->type_name());
  array->array_ready = true;
  array->dtype_descr = dtype->dtype_descr;
  if (!dtype->dtype_supported) {
    array->unsupported = "numpy dtype '" + dtype->dtype_descr + "' is not supported (expected a float, int or bool type)";
    std::string d = dtype->dtype_descr;
    if (!d.empty() && std::strchr("<>=|", d[0])) d = d.substr(1);
    array->non_numeric = d.empty() || !std::strchr("fiucb", d[0]);
    return;
  }
  if (data->kind != Kind::Bytes && data->kind != Kind::Str) {
    array->unsupported = std::string("numpy array data is a ") + data->type_name() + ", not bytes";
    array->non_numeric = true;
    return;
  }
  const DType dt = dtype->dtype;
  const int64_t es = static_cast<int64_t>(dtype_size(dt));
  int64_t numel = 1, nbytes = 0;
  for (int64_t s : shape)
    if (!checked_mul(numel, s, numel)) fail("numpy array shape " + shape_str(shape) + " overflows");
  if (!checked_mul(numel, es, nbytes) || !strides_fit(shape))
    fail("numpy array shape " + shape_str(shape) + " overflows");
  if (static_cast<uint64_t>(nbytes) != data->data_size())
    fail("numpy array data has " + std::to_string(data->data_size()) + " bytes, but shape " + shape_str(shape) +
         " of dtype " + dtype_name(dt) + " needs " + std::to_string(nbytes));
  // The data stays where it is (shared by every array made from it) until materialise().
  array->size = shape;
  array->fortran = fortran && shape.size() > 1;
  array->big_endian = dtype->big_endian && es > 1;
  array->array_data = data;
  array->dtype = dt;
}

Shape to_shape(const Unpickler& u, const Obj* o, const char* what) {
  if (o->kind != Kind::Tuple && o->kind != Kind::List)
    u.fail(std::string(what) + ": expected a tuple of ints, found " + o->type_name());
  if (o->items.size() > kMaxDims)
    u.fail(std::string(what) + ": " + std::to_string(o->items.size()) + " dimensions, at most " +
           std::to_string(kMaxDims) + " are supported");
  Shape s;
  for (const Obj* v : o->items) {
    if (v->kind != Kind::Int || v->i < 0)
      u.fail(std::string(what) + ": expected non-negative ints, found " +
             (v->kind == Kind::Int ? std::to_string(v->i) : std::string(v->type_name())));
    s.push_back(v->i);
  }
  return s;
}

Obj* Unpickler::rebuild_tensor(const std::vector<Obj*>& args, const char* func) {
  if (args.size() < 4) fail(std::string(func) + " expects at least 4 arguments, found " + std::to_string(args.size()));
  Obj* storage = args[0];
  if (storage->kind != Kind::Storage)
    fail(std::string(func) + ": expected a storage (persistent id) as first argument, found " + storage->type_name());
  if (args[1]->kind != Kind::Int || args[1]->i < 0) fail(std::string(func) + ": storage_offset must be a non-negative int");
  Obj* t = make(Kind::TensorRef);
  t->storage = storage->storage;
  t->size = to_shape(*this, args[2], func);
  t->stride = to_shape(*this, args[3], func);
  if (t->size.size() != t->stride.size())
    fail(std::string(func) + ": size " + shape_str(t->size) + " and stride " + shape_str(t->stride) +
         " have different lengths");
  // The highest element the view touches must lie inside the storage (view).
  int64_t last = args[1]->i, numel = 1;
  for (std::size_t k = 0; k < t->size.size(); ++k) {
    int64_t ext = 0;
    if (!checked_mul(numel, t->size[k], numel)) fail(std::string(func) + ": size " + shape_str(t->size) + " overflows");
    if (t->size[k] == 0) continue;
    if (!checked_mul(t->size[k] - 1, t->stride[k], ext) || __builtin_add_overflow(last, ext, &last))
      fail(std::string(func) + ": size " + shape_str(t->size) + " with stride " + shape_str(t->stride) + " overflows");
  }
  if (!strides_fit(t->size))
    fail(std::string(func) + ": size " + shape_str(t->size) + " overflows (its strides do not fit an int64)");
  if (numel > 0 && last >= storage->i)
    fail(std::string(func) + ": a tensor of size " + shape_str(t->size) + ", stride " + shape_str(t->stride) +
         " at offset " + std::to_string(args[1]->i) + " reaches element " + std::to_string(last) +
         " of a storage of " + std::to_string(storage->i) + " elements");
  // Views whose elements overlap (expanded tensors, stride 0) could claim any size from a tiny
  // storage: refused rather than materialised.
  if (numel > storage->i)
    fail(std::string(func) + ": a tensor of size " + shape_str(t->size) + ", stride " + shape_str(t->stride) +
         " has more elements than its storage (" + std::to_string(storage->i) +
         "): overlapping (expanded) tensors are not supported");
  t->storage_offset = storage->storage_offset + args[1]->i;
  t->dtype = storage->storage->dtype;
  return t;
}

Obj* Unpickler::call(Obj* callable, Obj* args) {
  if (callable->kind != Kind::Global)
    fail(std::string("cannot call a ") + callable->type_name() + ": only the allowed globals are rebuilt");
  if (args->kind != Kind::Tuple) fail(std::string("call arguments must be a tuple, found ") + args->type_name());
  const auto& a = args->items;
  const std::string& fn = callable->global_name;
  auto need = [&](std::size_t lo, std::size_t hi) {
    if (a.size() < lo || a.size() > hi)
      fail(fn + " expects " + std::to_string(lo) + (lo == hi ? "" : " to " + std::to_string(hi)) + " arguments, found " +
           std::to_string(a.size()));
  };
  switch (callable->global) {
    case GlobalId::NumpyReconstruct: {
      need(1, 3);
      if (a[0]->kind != Kind::Global || a[0]->global != GlobalId::NumpyNdarray)
        fail(fn + " may only rebuild numpy.ndarray, found " +
             (a[0]->kind == Kind::Global ? a[0]->global_name : std::string(a[0]->type_name())));
      return make(Kind::Array);
    }
    case GlobalId::NumpyDtype:
      need(1, 3);
      return make_dtype(a[0]);
    case GlobalId::NumpyScalar: {
      need(1, 2);
      Obj* arr = make(Kind::Array);
      if (a.size() < 2) {
        arr->array_ready = true;
        arr->unsupported = "numpy object scalar";
        return arr;
      }
      fill_array(arr, Shape{}, a[0], false, a[1]);
      return arr;
    }
    case GlobalId::NumpyFrombuffer: {
      need(4, 4);
      Obj* arr = make(Kind::Array);
      if (!a[3]->is_text()) fail(fn + ": order must be 'C' or 'F'");
      const std::string order = a[3]->text();
      if (order != "C" && order != "F") fail(fn + ": order must be 'C' or 'F', found '" + order + "'");
      fill_array(arr, to_shape(*this, a[2], "numpy array shape"), a[1], order == "F", a[0]);
      return arr;
    }
    case GlobalId::CodecsEncode: {
      need(1, 2);
      if (a[0]->kind != Kind::Str) fail(fn + ": expected a str, found " + a[0]->type_name());
      if (a.size() > 1 && a[1]->is_text() && a[1]->payload().size() > kMaxNameText)
        fail(fn + ": unsupported encoding (" + std::to_string(a[1]->payload().size()) + " bytes of text)");
      std::string enc = a.size() > 1 && a[1]->is_text() ? a[1]->text() : "utf-8";
      for (char& c : enc) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      Obj* str = a[0];
      if (enc == "utf-8" || enc == "utf8") {  // the same bytes: shared, not copied
        Obj* o = make(Kind::Bytes);
        const std::string_view d = str->payload();
        o->view = reinterpret_cast<const uint8_t*>(d.data());
        o->view_size = d.size();
        return o;
      }
      if (enc != "latin1" && enc != "latin-1" && enc != "iso-8859-1" && enc != "iso8859-1")
        fail(fn + ": unsupported encoding '" + enc + "' (expected latin1)");
      // One encoding per str, however often it is encoded; decoded when first needed.
      if (auto it = latin1_.find(str); it != latin1_.end()) return it->second;
      const std::string_view text = str->payload();
      std::size_t n = 0;
      for (std::size_t k = 0; k < text.size(); ++k) {
        const unsigned char c = static_cast<unsigned char>(text[k]);
        if (c < 0x80) {
          ++n;
        } else if (c == 0xC2 || c == 0xC3) {
          if (k + 1 >= text.size() || (static_cast<unsigned char>(text[k + 1]) & 0xC0) != 0x80)
            fail(fn + ": the text is not valid UTF-8");
          ++n;
          ++k;
        } else if ((c & 0xC0) == 0x80 || c < 0xC2 || c > 0xF4) {
          fail(fn + ": the text is not valid UTF-8");
        } else {
          fail(fn + ": a character above U+00FF cannot be encoded as latin1");
        }
      }
      Obj* o = make(Kind::Bytes);
      o->latin1_of = str;
      o->view_size = n;
      latin1_.emplace(str, o);
      return o;
    }
    case GlobalId::OrderedDict: {
      need(0, 1);
      Obj* d = make(Kind::Dict);
      if (a.size() == 1) {
        Obj* items = a[0];
        if (items->kind == Kind::Dict) {
          count_items(items->dict.size());
          d->dict = items->dict;
          if (items->index) d->index = std::make_unique<std::unordered_map<uint32_t, std::size_t>>(*items->index);
        } else if (items->kind == Kind::List || items->kind == Kind::Tuple) {
          count_items(items->items.size());
          for (Obj* p : items->items) {
            if ((p->kind != Kind::List && p->kind != Kind::Tuple) || p->items.size() != 2)
              fail(fn + ": expected (key, value) pairs");
            set_item(d, p->items[0], p->items[1]);
          }
        } else {
          fail(fn + ": expected a list of pairs, found " + items->type_name());
        }
      }
      return d;
    }
    case GlobalId::Set:
    case GlobalId::FrozenSet: {
      need(0, 1);
      Obj* s = make(Kind::Set);
      if (a.size() == 1) {
        if (a[0]->kind != Kind::List && a[0]->kind != Kind::Tuple && a[0]->kind != Kind::Set)
          fail(fn + ": expected a list, found " + a[0]->type_name());
        count_items(a[0]->items.size());
        s->items = a[0]->items;
      }
      return s;
    }
    case GlobalId::ByteArray: {
      need(0, 2);
      if (a.empty()) return make(Kind::Bytes);
      if (a[0]->kind == Kind::Bytes) {  // the same bytes: shared, not copied
        if (a[0]->latin1_of) return a[0];
        Obj* o = make(Kind::Bytes);
        const std::string_view d = a[0]->payload();
        o->view = reinterpret_cast<const uint8_t*>(d.data());
        o->view_size = d.size();
        return o;
      }
      if (a[0]->kind == Kind::Str && a.size() == 2) {
        Obj* enc = make(Kind::Tuple);
        enc->items = {a[0], a[1]};
        Obj* g = make(Kind::Global);
        g->global = GlobalId::CodecsEncode;
        g->global_name = fn;
        return call(g, enc);
      }
      fail(fn + ": unsupported arguments");
    }
    case GlobalId::TorchRebuildTensor:
      need(4, 4);
      return rebuild_tensor(a, fn.c_str());
    case GlobalId::TorchRebuildTensorV2:
      need(6, 7);
      return rebuild_tensor(a, fn.c_str());
    case GlobalId::TorchRebuildParameter:
    case GlobalId::TorchRebuildParameterWithState:
      need(3, 4);
      if (a[0]->kind != Kind::TensorRef) fail(fn + ": expected a tensor, found " + a[0]->type_name());
      return a[0];
    case GlobalId::TorchRebuildFromTypeV2: {
      need(4, 4);
      if (a[1]->kind != Kind::Global || a[1]->global != GlobalId::TorchTensorType)
        fail(fn + ": only torch.Tensor and torch.nn.Parameter are rebuilt, found " +
             (a[1]->kind == Kind::Global ? a[1]->global_name : std::string(a[1]->type_name())));
      if (a[0]->kind != Kind::Global ||
          (a[0]->global != GlobalId::TorchRebuildTensorV2 && a[0]->global != GlobalId::TorchRebuildTensor))
        fail(fn + ": the rebuild function must be torch._utils._rebuild_tensor_v2");
      Obj* r = call(a[0], a[2]);
      return r;
    }
    case GlobalId::TorchLoadFromBytes:
      need(1, 1);
      if (a[0]->kind != Kind::Bytes) fail(fn + ": expected bytes, found " + a[0]->type_name());
      if (!load_from_bytes_) fail(fn + " (a storage pickled by pickle rather than torch.save) is only read in .pkl files");
      return load_from_bytes_(*this, a[0]);
    case GlobalId::NumpyNdarray:
    case GlobalId::TorchStorageType:
    case GlobalId::TorchTensorType:
      fail("'" + fn + "' is only accepted as an argument, it cannot be called here");
  }
  fail("'" + fn + "' cannot be called");
}

void Unpickler::build(Obj* target, Obj* state) {
  switch (target->kind) {
    case Kind::Array: {
      if (target->array_ready) fail("numpy array state given twice");
      if (state->kind != Kind::Tuple) fail(std::string("numpy array state: expected a tuple, found ") + state->type_name());
      const auto& s = state->items;
      if (s.size() != 4 && s.size() != 5)
        fail("numpy array state: expected (version, shape, dtype, is_fortran, data), found " + std::to_string(s.size()) +
             " items");
      const std::size_t o = s.size() - 4;
      Obj* fortran = s[o + 2];
      if (fortran->kind != Kind::Bool && fortran->kind != Kind::Int)
        fail(std::string("numpy array state: is_fortran must be a bool, found ") + fortran->type_name());
      const bool is_fortran = fortran->kind == Kind::Bool ? fortran->b : fortran->i != 0;
      fill_array(target, to_shape(*this, s[o], "numpy array shape"), s[o + 1], is_fortran, s[o + 3]);
      return;
    }
    case Kind::DType: {
      if (state->kind != Kind::Tuple || state->items.size() < 2)
        fail("numpy.dtype state: expected a tuple (version, byteorder, ...)");
      const auto& s = state->items;
      if (s[1]->is_text()) {
        const std::string order = s[1]->text();
        if (order == ">") target->big_endian = true;
        else if (order == "<" || order == "|" || order == "=") target->big_endian = false;
        else fail("numpy.dtype state: unknown byte order '" + order + "'");
      }
      for (std::size_t k = 2; k < 5 && k < s.size(); ++k)
        if (s[k]->kind != Kind::None) {  // sub-array or structured dtype
          target->dtype_supported = false;
          target->dtype_descr = "V (structured)";
        }
      return;
    }
    case Kind::Dict:       // OrderedDict attributes (torch's _metadata): not needed
    case Kind::TensorRef:  // tensor attributes
      return;
    default:
      fail(std::string("BUILD on a ") + target->type_name() + " is not supported");
  }
}

void Unpickler::set_item(Obj* dict, Obj* key, Obj* value) {
  if (dict->kind != Kind::Dict) fail(std::string("SETITEM on a ") + dict->type_name() + ", expected a dict");
  // Text keys replace an equal key's value, through an index of interned keys (linear time for
  // the whole dict); other keys (ints, tuples) are kept as they come.
  if (const uint32_t id = key_id(key)) {
    if (!dict->index) dict->index = std::make_unique<std::unordered_map<uint32_t, std::size_t>>();
    auto [it, fresh] = dict->index->emplace(id, dict->dict.size());
    if (!fresh) {
      dict->dict[it->second].second = value;
      return;
    }
  }
  dict->dict.emplace_back(key, value);
}

namespace {

// codecs.escape_decode of a protocol-0 STRING body.
bool escape_decode(const std::string& in, std::string& out) {
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= in.size()) return false;
    c = in[i];
    switch (c) {
      case '\n': break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': {
        if (i + 2 >= in.size()) return false;
        const int h = hex_value(in[i + 1]), l = hex_value(in[i + 2]);
        if (h < 0 || l < 0) return false;
        out += static_cast<char>(h * 16 + l);
        i += 2;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int v = c - '0';
          for (int k = 0; k < 2 && i + 1 < in.size() && in[i + 1] >= '0' && in[i + 1] <= '7'; ++k) v = v * 8 + (in[++i] - '0');
          out += static_cast<char>(v & 0xFF);
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return true;
}

// raw-unicode-escape (protocol-0 UNICODE) to UTF-8.
bool raw_unicode_escape_decode(const std::string& in, std::string& out) {
  for (std::size_t i = 0; i < in.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(in[i]);
    if (c == '\\' && i + 1 < in.size() && (in[i + 1] == 'u' || in[i + 1] == 'U')) {
      const std::size_t n = in[i + 1] == 'u' ? 4 : 8;
      if (i + 2 + n > in.size()) return false;
      uint32_t cp = 0;
      for (std::size_t k = 0; k < n; ++k) {
        const int h = hex_value(in[i + 2 + k]);
        if (h < 0) return false;
        cp = cp * 16 + static_cast<uint32_t>(h);
      }
      if (cp > 0x10FFFF) return false;
      append_utf8(out, cp);
      i += 1 + n;
    } else {
      append_utf8(out, c);
    }
  }
  return true;
}

bool parse_decimal(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  std::size_t i = 0;
  bool neg = false;
  if (s[0] == '-' || s[0] == '+') {
    neg = s[0] == '-';
    i = 1;
  }
  if (i >= s.size()) return false;
  int64_t r = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (__builtin_mul_overflow(r, 10, &r) || __builtin_add_overflow(r, neg ? -(s[i] - '0') : (s[i] - '0'), &r)) return false;
  }
  v = r;
  return true;
}

}  // namespace

Obj* Unpickler::load() {
  stack_.clear();
  marks_.clear();
  memo_.clear();
  memo_count_ = 0;
  for (;;) {
    op_start_ = pos_;
    const uint8_t op = read_u8();
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t proto = read_u8();
        if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto) + " (0 to 5 are read)");
        break;
      }
      case 0x95: {  // FRAME
        const uint64_t n = read_uint(8, "FRAME");
        if (n > size_ - pos_)
          fail("truncated: FRAME announces " + std::to_string(n) + " bytes, only " + std::to_string(size_ - pos_) +
               " are left");
        break;
      }
      case '.': {  // STOP
        Obj* v = pop();
        return v;
      }
      case '(':
        if (marks_.size() >= kMaxStack) fail("too many MARKs");
        marks_.push_back(stack_.size());
        break;
      case '0':  // POP
        if (!stack_.empty() && (marks_.empty() || stack_.size() > marks_.back())) stack_.pop_back();
        else pop_mark();
        break;
      case '1': pop_mark(); break;
      case '2': push(top()); break;
      case 'N': push(make(Kind::None)); break;
      case 0x88:
      case 0x89: {
        Obj* o = make(Kind::Bool);
        o->b = op == 0x88;
        push(o);
        break;
      }
      case 'I': {
        const std::string line = read_line("INT");
        if (line == "00" || line == "01") {
          Obj* o = make(Kind::Bool);
          o->b = line == "01";
          push(o);
          break;
        }
        int64_t v = 0;
        if (!parse_decimal(line, v)) fail("INT: '" + line + "' is not an int that fits 64 bits");
        push(make_int(v));
        break;
      }
      case 'J': push(make_int(static_cast<int32_t>(static_cast<uint32_t>(read_uint(4, "BININT"))))); break;
      case 'K': push(make_int(static_cast<int64_t>(read_uint(1, "BININT1")))); break;
      case 'M': push(make_int(static_cast<int64_t>(read_uint(2, "BININT2")))); break;
      case 'L': {
        std::string line = read_line("LONG");
        if (!line.empty() && line.back() == 'L') line.pop_back();
        int64_t v = 0;
        if (parse_decimal(line, v)) {
          push(make_int(v));
        } else {
          for (std::size_t k = (line.size() && line[0] == '-') ? 1 : 0; k < line.size(); ++k)
            if (line[k] < '0' || line[k] > '9') fail("LONG: '" + line + "' is not an int");
          Obj* o = make(Kind::BigInt);
          o->bytes = line;  // kept as text: too wide for any use here
          push(o);
        }
        break;
      }
      case 0x8a: {  // LONG1
        const uint64_t n = read_uint(1, "LONG1");
        push(make_long(read_bytes(n, "LONG1"), static_cast<std::size_t>(n)));
        break;
      }
      case 0x8b: {  // LONG4
        const int32_t n = static_cast<int32_t>(static_cast<uint32_t>(read_uint(4, "LONG4")));
        if (n < 0) fail("LONG4: negative byte count");
        push(make_long(read_bytes(static_cast<uint64_t>(n), "LONG4"), static_cast<std::size_t>(n)));
        break;
      }
      case 'F': {
        const std::string line = read_line("FLOAT");
        char* end = nullptr;
        const double v = std::strtod(line.c_str(), &end);
        if (line.empty() || end != line.c_str() + line.size()) fail("FLOAT: '" + line + "' is not a float");
        Obj* o = make(Kind::Float);
        o->f = v;
        push(o);
        break;
      }
      case 'G': {
        const uint8_t* p = read_bytes(8, "BINFLOAT");
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | p[k];
        Obj* o = make(Kind::Float);
        std::memcpy(&o->f, &bits, 8);
        push(o);
        break;
      }
      case 'S': {  // STRING (protocol 0): a quoted Python 2 str
        const std::string line = read_line("STRING");
        if (line.size() < 2 || (line[0] != '\'' && line[0] != '"') || line.back() != line[0])
          fail("STRING: the argument must be quoted");
        std::string decoded;
        if (!escape_decode(line.substr(1, line.size() - 2), decoded)) fail("STRING: bad escape");
        push(make_bytes(reinterpret_cast<const uint8_t*>(decoded.data()), decoded.size(), true));
        break;
      }
      case 'T': {  // BINSTRING
        const int32_t n = static_cast<int32_t>(static_cast<uint32_t>(read_uint(4, "BINSTRING")));
        if (n < 0) fail("BINSTRING: negative length");
        push(make_bytes(read_bytes(static_cast<uint64_t>(n), "BINSTRING"), static_cast<std::size_t>(n), true, true));
        break;
      }
      case 'U': {  // SHORT_BINSTRING
        const uint64_t n = read_uint(1, "SHORT_BINSTRING");
        push(make_bytes(read_bytes(n, "SHORT_BINSTRING"), static_cast<std::size_t>(n), true, true));
        break;
      }
      case 'B':
      case 'C':
      case 0x8e:
      case 0x96: {  // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
        const char* name = op == 'B' ? "BINBYTES" : op == 'C' ? "SHORT_BINBYTES" : op == 0x8e ? "BINBYTES8" : "BYTEARRAY8";
        const uint64_t n = read_uint(op == 'B' ? 4 : op == 'C' ? 1 : 8, name);
        push(make_bytes(read_bytes(n, name), static_cast<std::size_t>(n), false, true));
        break;
      }
      case 'V': {  // UNICODE (protocol 0)
        const std::string line = read_line("UNICODE");
        std::string decoded;
        if (!raw_unicode_escape_decode(line, decoded)) fail("UNICODE: bad escape");
        push(make_str(std::move(decoded)));
        break;
      }
      case 'X':
      case 0x8c:
      case 0x8d: {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
        const char* name = op == 'X' ? "BINUNICODE" : op == 0x8c ? "SHORT_BINUNICODE" : "BINUNICODE8";
        const uint64_t n = read_uint(op == 'X' ? 4 : op == 0x8c ? 1 : 8, name);
        push(make_str_view(read_bytes(n, name), static_cast<std::size_t>(n)));
        break;
      }
      case ')': push(make(Kind::Tuple)); break;
      case 't': {
        Obj* o = make(Kind::Tuple);
        o->items = pop_mark();
        push(o);
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const std::size_t n = op - 0x84u;
        Obj* o = make(Kind::Tuple);
        o->items.resize(n);
        for (std::size_t k = n; k-- > 0;) o->items[k] = pop();
        push(o);
        break;
      }
      case ']': push(make(Kind::List)); break;
      case 'l': {
        Obj* o = make(Kind::List);
        o->items = pop_mark();
        push(o);
        break;
      }
      case 'a': {
        Obj* v = pop();
        Obj* l = top();
        if (l->kind != Kind::List) fail(std::string("APPEND to a ") + l->type_name() + ", expected a list");
        l->items.push_back(v);
        break;
      }
      case 'e': {
        std::vector<Obj*> items = pop_mark();
        Obj* l = top();
        if (l->kind != Kind::List) fail(std::string("APPENDS to a ") + l->type_name() + ", expected a list");
        l->items.insert(l->items.end(), items.begin(), items.end());
        break;
      }
      case '}': push(make(Kind::Dict)); break;
      case 'd': {
        std::vector<Obj*> items = pop_mark();
        if (items.size() % 2) fail("DICT: odd number of items");
        Obj* d = make(Kind::Dict);
        for (std::size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
        push(d);
        break;
      }
      case 's': {
        Obj* v = pop();
        Obj* k = pop();
        set_item(top(), k, v);
        break;
      }
      case 'u': {
        std::vector<Obj*> items = pop_mark();
        if (items.size() % 2) fail("SETITEMS: odd number of items");
        Obj* d = top();
        for (std::size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
        break;
      }
      case 0x8f: push(make(Kind::Set)); break;
      case 0x90: {  // ADDITEMS
        std::vector<Obj*> items = pop_mark();
        Obj* s = top();
        if (s->kind != Kind::Set) fail(std::string("ADDITEMS to a ") + s->type_name() + ", expected a set");
        s->items.insert(s->items.end(), items.begin(), items.end());
        break;
      }
      case 0x91: {  // FROZENSET
        Obj* s = make(Kind::Set);
        s->items = pop_mark();
        push(s);
        break;
      }
      case 'c': {  // GLOBAL
        const std::string module = read_line("GLOBAL");
        const std::string name = read_line("GLOBAL");
        push(resolve_global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Obj* name = pop();
        Obj* module = pop();
        if (!name->is_text() || !module->is_text()) fail("STACK_GLOBAL: module and name must be str");
        if (name->payload().size() > kMaxNameText || module->payload().size() > kMaxNameText)
          fail("STACK_GLOBAL: a module or name of more than " + std::to_string(kMaxNameText) +
               " bytes is not a global this reader knows");
        push(resolve_global(module->text(), name->text()));
        break;
      }
      case 'R': {  // REDUCE
        Obj* args = pop();
        Obj* callable = pop();
        push(call(callable, args));
        break;
      }
      case 0x81: {  // NEWOBJ
        Obj* args = pop();
        Obj* cls = pop();
        push(call(cls, args));
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        Obj* kwargs = pop();
        Obj* args = pop();
        Obj* cls = pop();
        if (kwargs->kind != Kind::Dict || !kwargs->dict.empty()) fail("NEWOBJ_EX with keyword arguments is not supported");
        push(call(cls, args));
        break;
      }
      case 'i': {  // INST
        const std::string module = read_line("INST");
        const std::string name = read_line("INST");
        Obj* cls = resolve_global(module, name);
        Obj* args = make(Kind::Tuple);
        args->items = pop_mark();
        push(call(cls, args));
        break;
      }
      case 'o': {  // OBJ
        std::vector<Obj*> items = pop_mark();
        if (items.empty()) fail("OBJ without a class");
        Obj* args = make(Kind::Tuple);
        args->items.assign(items.begin() + 1, items.end());
        push(call(items[0], args));
        break;
      }
      case 'b': {  // BUILD
        Obj* state = pop();
        build(top(), state);
        break;
      }
      case 'P':
      case 'Q': {  // PERSID, BINPERSID
        Obj* pid = op == 'P' ? make_str(read_line("PERSID")) : pop();
        if (!persistent_load_) fail("a persistent id (torch storage) in a file that cannot have one");
        push(persistent_load_(*this, pid));
        break;
      }
      case 'p': {
        int64_t idx = 0;
        const std::string line = read_line("PUT");
        if (!parse_decimal(line, idx) || idx < 0) fail("PUT: bad index '" + line + "'");
        memo_put(static_cast<uint64_t>(idx), top());
        break;
      }
      case 'q': memo_put(read_uint(1, "BINPUT"), top()); break;
      case 'r': memo_put(read_uint(4, "LONG_BINPUT"), top()); break;
      case 0x94: memo_put(memo_count_, top()); break;  // MEMOIZE
      case 'g': {
        int64_t idx = 0;
        const std::string line = read_line("GET");
        if (!parse_decimal(line, idx) || idx < 0) fail("GET: bad index '" + line + "'");
        push(memo_get(static_cast<uint64_t>(idx)));
        break;
      }
      case 'h': push(memo_get(read_uint(1, "BINGET"))); break;
      case 'j': push(memo_get(read_uint(4, "LONG_BINGET"))); break;
      case 0x82:
      case 0x83:
      case 0x84: fail("extension codes (EXT1/EXT2/EXT4) are not supported: they name globals through copyreg");
      case 0x97: fail("out-of-band buffers (NEXT_BUFFER) are not supported: the data must be in the file");
      case 0x98: top(); break;  // READONLY_BUFFER
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        fail(std::string("unknown opcode ") + buf);
      }
    }
  }
}

void Unpickler::check_tensor(const Obj* o, const std::string& name) const {
  if (o->kind == Kind::Array) {
    if (!o->array_ready) fail("numpy array '" + name + "' never received its data (no BUILD)");
    if (!o->unsupported.empty()) fail("entry '" + name + "': " + o->unsupported);
    return;
  }
  if (o->kind != Kind::TensorRef) fail("entry '" + name + "' is a " + o->type_name() + ", not a tensor");
  if (!o->storage->data) fail("entry '" + name + "': the data of storage '" + o->storage->key + "' was never read");
}

namespace {

// Where a tensor's elements are: base pointer, shape, element strides, and how to read them.
struct Layout {
  const uint8_t* base = nullptr;
  Shape shape, strides;
  DType dtype = DType::Float32;
  bool big_endian = false;
  std::shared_ptr<const void> owner;  // null: the bytes live in the unpickler's arena
};

bool viewable(const Layout& l) {
  const std::size_t es = dtype_size(l.dtype);
  return l.owner && !l.big_endian && reinterpret_cast<std::uintptr_t>(l.base) % es == 0 &&
         l.strides == contiguous_strides(l.shape);
}

std::string copy_key(const Layout& l) {
  std::string k = std::to_string(reinterpret_cast<std::uintptr_t>(l.base)) + "/" + dtype_name(l.dtype) + "/" +
                  (l.big_endian ? "be/" : "le/") + shape_str(l.shape) + shape_str(l.strides);
  return k;
}

}  // namespace

Unpickler::Span Unpickler::span_of(const Obj* o) {
  const std::string_view d = data(o);
  return {reinterpret_cast<const uint8_t*>(d.data()), d.size(), data_owner(o)};
}

static Layout layout_of(const Obj* o) {
  Layout l;
  l.shape = o->size;
  l.dtype = o->dtype;
  if (o->kind == Kind::Array) {
    l.big_endian = o->big_endian;
    if (o->fortran) {
      l.strides.resize(l.shape.size());
      int64_t st = 1;  // the product stays below the data size, checked when the array was built
      for (std::size_t k = 0; k < l.shape.size(); ++k) {
        l.strides[k] = st;
        st *= std::max<int64_t>(l.shape[k], 1);
      }
    } else {
      l.strides = contiguous_strides(l.shape);
    }
    return l;
  }
  const StorageData& s = *o->storage;
  l.base = s.data + static_cast<std::size_t>(o->storage_offset) * dtype_size(s.dtype);
  l.strides = o->stride;
  l.owner = s.buffer;
  return l;
}

Tensor Unpickler::materialise(const Obj* o, const std::string& name) {
  check_tensor(o, name);
  if (shape_numel(o->size) == 0) return Tensor::empty(o->size, o->dtype);
  Layout l = layout_of(o);
  if (o->kind == Kind::Array) {
    const Span sp = span_of(o->array_data);
    l.base = sp.p;
    l.owner = sp.owner;
  }
  if (viewable(l))
    return Tensor::from_blob(const_cast<uint8_t*>(l.base), l.shape, l.dtype, Device::cpu(),
                             std::const_pointer_cast<void>(l.owner));
  const std::string key = copy_key(l);
  if (auto it = copies_.find(key); it != copies_.end()) return it->second;
  budget_->charge(static_cast<uint64_t>(shape_numel(l.shape)) * dtype_size(l.dtype), "a copy of entry '" + name + "'");
  Tensor out = Tensor::empty(l.shape, l.dtype);
  // Gather element by element (strided or Fortran-order data), byte-swapping big-endian data.
  const std::size_t es = dtype_size(l.dtype);
  auto* dst = static_cast<uint8_t*>(out.data());
  if (!l.big_endian && l.strides == contiguous_strides(l.shape)) {  // misaligned or in the arena
    std::memcpy(dst, l.base, out.nbytes());
    copies_.emplace(key, out);
    return out;
  }
  const std::size_t nd = l.shape.size();
  std::vector<int64_t> idx(nd, 0);
  const int64_t n = shape_numel(l.shape);
  int64_t off = 0;
  for (int64_t k = 0; k < n; ++k) {
    const uint8_t* src = l.base + off * static_cast<int64_t>(es);
    if (l.big_endian) {
      for (std::size_t b = 0; b < es; ++b) dst[b] = src[es - 1 - b];
    } else {
      std::memcpy(dst, src, es);
    }
    dst += es;
    for (std::size_t d = nd; d-- > 0;) {
      off += l.strides[d];
      if (++idx[d] < l.shape[d]) break;
      off -= l.strides[d] * l.shape[d];
      idx[d] = 0;
    }
  }
  copies_.emplace(key, out);
  return out;
}

}  // namespace backbone::detail::pickle
