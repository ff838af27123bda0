// SPDX-License-Identifier: Apache-2.0
// A restricted pickle reader (protocols 0 to 5) that never runs code. It knows a fixed allow-list
// of globals (numpy array reconstruction, torch tensor rebuilding, OrderedDict, set, bytearray,
// _codecs.encode) and builds those objects itself; any other global is a CheckpointError naming it.
// Objects live in an arena owned by the Unpickler, so cycles and deep nesting cannot crash the
// destructor. Every length is checked against the bytes that are left before anything is allocated.
// Shared data stays shared: large bytes and str refer to the input, _codecs.encode and bytearray
// refer to their argument (latin-1 text is decoded once, when first needed, and charged to the
// MemoryBudget), numpy arrays and torch tensors keep a reference to their data and are only
// materialised by materialise(), which returns views of the input where it can. Text dict keys are
// interned once, so a dict is built in linear time whatever its keys.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backbone/tensor.h"
#include "checkpoint/budget.h"

namespace backbone::detail::pickle {

enum class Kind {
  None,
  Bool,
  Int,
  BigInt,  // an integer wider than 64 bits: its little-endian two's complement bytes in `bytes`
  Float,
  Str,     // text (UTF-8 in `bytes`)
  Bytes,   // bytes, bytearray, or a Python 2 str (py2_str set: also usable as latin-1 text)
  Tuple,
  List,
  Dict,    // dict and OrderedDict, in insertion order
  Set,     // set and frozenset
  Global,  // an allowed global (class or function)
  DType,   // numpy.dtype
  Array,   // numpy.ndarray (or a numpy scalar, 0-d)
  Storage, // a torch storage from a persistent id
  TensorRef,  // a torch tensor: a view of a storage, materialised later
};

enum class GlobalId {
  NumpyReconstruct,
  NumpyNdarray,
  NumpyDtype,
  NumpyScalar,
  NumpyFrombuffer,
  CodecsEncode,
  OrderedDict,
  Set,
  FrozenSet,
  ByteArray,
  TorchRebuildTensor,
  TorchRebuildTensorV2,
  TorchRebuildParameter,
  TorchRebuildParameterWithState,
  TorchRebuildFromTypeV2,
  TorchStorageType,  // torch.FloatStorage, ...: `dtype` says which
  TorchTensorType,   // torch.Tensor, torch.nn.parameter.Parameter (markers for _rebuild_from_type_v2)
  TorchLoadFromBytes,  // torch.storage._load_from_bytes: a storage pickled with pickle, not torch.save
};

// The bytes of one torch storage. `data` is null until the storage has been read (legacy format).
struct StorageData {
  DType dtype = DType::UInt8;
  int64_t numel = 0;
  std::string key;
  std::shared_ptr<const void> buffer;  // keeps `data` alive
  const uint8_t* data = nullptr;       // numel * dtype_size(dtype) bytes
};

struct Obj {
  Kind kind = Kind::None;
  bool b = false;
  bool py2_str = false;  // Bytes from STRING / BINSTRING / SHORT_BINSTRING
  int64_t i = 0;
  double f = 0.0;
  std::string bytes;  // Str (UTF-8), Bytes, BigInt
  // Large Bytes and Str refer to the input instead of a copy (the input outlives the Unpickler's
  // objects), bytes made from another object refer to that object's data.
  const uint8_t* view = nullptr;
  std::size_t view_size = 0;
  const Obj* latin1_of = nullptr;  // Bytes: the latin-1 encoding of this Str, decoded when first needed
  std::shared_ptr<const std::vector<uint8_t>> decoded;  // that decoding, once done (`view` points into it)
  std::string text_cache;  // a Python 2 str's text (UTF-8), once needed as a dict key
  uint32_t key_id = 0;     // interned text + 1, once used as a dict key
  std::unique_ptr<std::unordered_map<uint32_t, std::size_t>> index;  // Dict: key_id -> position in `dict`
  std::vector<Obj*> items;  // Tuple, List, Set
  std::vector<std::pair<Obj*, Obj*>> dict;
  // Global
  GlobalId global = GlobalId::OrderedDict;
  std::string global_name;  // "module.name"
  // DType (and Array / Storage element type)
  DType dtype = DType::Float32;
  std::string dtype_descr;   // numpy's type string ("f4") for messages
  bool dtype_supported = true;
  bool big_endian = false;
  // Array: built (BUILD or a constructor) or still waiting for its state
  bool array_ready = false;
  std::string unsupported;  // why an Array cannot become a Tensor ("" when it can)
  bool non_numeric = false;  // unsupported because it holds objects, strings or records (not a tensor)
  bool fortran = false;      // Array data in Fortran order
  const Obj* array_data = nullptr;  // Array: the Bytes (or Str) holding its data, `size` its shape
  // Storage / TensorRef
  std::shared_ptr<StorageData> storage;
  int64_t storage_offset = 0;  // elements: a legacy storage view's offset, or a tensor's
  Shape size, stride;

  // The bytes of a Bytes or Str object (whether copied or a view); a latin-1 encoding that was not
  // decoded yet has none: see Unpickler::data().
  std::string_view payload() const {
    return view ? std::string_view(reinterpret_cast<const char*>(view), view_size) : std::string_view(bytes);
  }
  // The size of the data, decoded or not.
  std::size_t data_size() const { return view || !latin1_of ? payload().size() : view_size; }
  bool is_text() const { return kind == Kind::Str || (kind == Kind::Bytes && py2_str); }
  // Text as UTF-8 (a Python 2 str is decoded as latin-1, as pickle.load(encoding="latin1") does).
  std::string text() const;
  // Python's name of the kind, for messages ("dict", "str", "numpy.ndarray", ...).
  const char* type_name() const;
};

class Unpickler {
 public:
  // `what` names the input in messages ("file /x/model.pkl"); `owner` keeps `data` alive (tensors
  // returned by materialise() may be views of it and hold it); `budget` is charged for what is
  // materialised.
  Unpickler(const uint8_t* data, std::size_t size, std::string what, std::shared_ptr<const void> owner,
            std::shared_ptr<MemoryBudget> budget);

  // Called for PERSID / BINPERSID with the persistent id; returns the object it stands for. Without
  // one, a persistent id is an error.
  using PersistentLoad = std::function<Obj*(Unpickler&, Obj* pid)>;
  void set_persistent_load(PersistentLoad f) { persistent_load_ = std::move(f); }
  // Reads the torch.save stream of torch.storage._load_from_bytes(bytes); without one, that global
  // is an error.
  using BytesLoad = std::function<Obj*(Unpickler&, const Obj* bytes)>;
  void set_load_from_bytes(BytesLoad f) { load_from_bytes_ = std::move(f); }

  // Reads one pickle from the current position up to its STOP and returns its value. May be
  // called again for the next pickle of the same stream (the memo starts afresh).
  Obj* load();
  std::size_t position() const { return pos_; }
  void set_position(std::size_t pos) { pos_ = pos; }
  const std::string& what() const { return what_; }

  Obj* make(Kind kind);
  [[noreturn]] void fail(const std::string& message) const;

  // The data of a Bytes (or Str) object, decoding a latin-1 encoding on first use (charged).
  std::string_view data(const Obj* bytes);
  struct Span {
    const uint8_t* p;
    std::size_t n;
    std::shared_ptr<const void> owner;  // null: the bytes live in the unpickler's objects
  };
  Span span_of(const Obj* o);
  // The owner that keeps data(bytes) alive, or null when the object itself holds it.
  std::shared_ptr<const void> data_owner(const Obj* bytes) const;
  // Dict lookup by text key; null when absent (or when `dict` is not a dict).
  Obj* get(const Obj* dict, std::string_view key) const;
  // Checks that `o` (an Array or a TensorRef) can become a tensor; CheckpointError naming `name`
  // otherwise. Materialises nothing.
  void check_tensor(const Obj* o, const std::string& name) const;
  // `o` as a CPU tensor: a view of the file where the data is contiguous, aligned and native,
  // otherwise a contiguous copy (charged to the budget; the same view copied twice is copied once).
  Tensor materialise(const Obj* o, const std::string& name);
  MemoryBudget& budget() { return *budget_; }
  const std::shared_ptr<MemoryBudget>& budget_ptr() const { return budget_; }

 private:
  uint8_t read_u8();
  const uint8_t* read_bytes(uint64_t n, const char* opcode);
  uint64_t read_uint(int nbytes, const char* opcode);
  std::string read_line(const char* opcode);
  Obj* pop();
  Obj* top();
  std::vector<Obj*> pop_mark();
  void push(Obj* o);
  Obj* resolve_global(const std::string& module, const std::string& name);
  Obj* call(Obj* callable, Obj* args);
  void build(Obj* target, Obj* state);
  void set_item(Obj* dict, Obj* key, Obj* value);
  void memo_put(uint64_t index, Obj* o);
  Obj* memo_get(uint64_t index);
  Obj* make_int(int64_t v);
  Obj* make_long(const uint8_t* p, std::size_t n);
  Obj* make_bytes(const uint8_t* p, std::size_t n, bool py2_str = false, bool from_input = false);
  Obj* make_str(std::string s);
  Obj* make_str_view(const uint8_t* p, std::size_t n);
  // The text of a dict key (Str or Python 2 str), interned: 0 for other keys.
  uint32_t key_id(Obj* key);
  void count_items(std::size_t n);


  // numpy helpers
  Obj* make_dtype(Obj* descr);
  void fill_array(Obj* array, const Shape& shape, Obj* dtype, bool fortran, Obj* data);
  // torch helpers
  Obj* rebuild_tensor(const std::vector<Obj*>& args, const char* func);

  const uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::string what_;
  std::shared_ptr<const void> owner_;
  std::shared_ptr<MemoryBudget> budget_;
  std::vector<std::unique_ptr<Obj[]>> chunks_;  // the arena: chunks of growing size, objects never move
  std::size_t chunk_size_ = 0, chunk_used_ = 0, objects_ = 0;
  std::size_t items_ = 0;  // container items copied by constructors (OrderedDict(d), set(l))
  std::unordered_map<std::string_view, uint32_t> interned_;
  std::unordered_map<const Obj*, Obj*> latin1_;  // Str -> its latin-1 encoding
  std::unordered_map<std::string, Tensor> copies_;  // materialised copies, by data, dtype and layout
  std::vector<Obj*> stack_;
  std::vector<std::size_t> marks_;
  std::vector<Obj*> memo_;  // by index; null: never stored
  std::size_t memo_count_ = 0;
  PersistentLoad persistent_load_;
  BytesLoad load_from_bytes_;
  std::size_t op_start_ = 0;
};

// The most dimensions a shape may have (numpy's NPY_MAXDIMS is 64 since numpy 2, 32 before).
constexpr std::size_t kMaxDims = 64;
// Shape from a tuple/list of ints (checked non-negative, at most kMaxDims); `what` names it in messages.
Shape to_shape(const Unpickler& u, const Obj* o, const char* what);
// Whether a tensor of this shape has row-major strides within int64. Its numel can fit while they
// do not: a size of 0 empties the tensor but counts as 1 in the strides ([0, 2^62, 4]).
bool strides_fit(const Shape& shape);

}  // namespace backbone::detail::pickle
