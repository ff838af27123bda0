// SPDX-License-Identifier: Apache-2.0
// A restricted pickle reader (protocols 0 to 5) that never runs code. It knows a fixed allow-list
// of globals (numpy array reconstruction, torch tensor rebuilding, OrderedDict, set, bytearray,
// _codecs.encode) and builds those objects itself; any other global is a CheckpointError naming it.
// Objects live in an arena owned by the Unpickler, so cycles and deep nesting cannot crash the
// destructor. Every length is checked against the bytes that are left before anything is allocated.
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
  std::shared_ptr<const std::vector<uint8_t>> buffer;  // keeps `data` alive
  const uint8_t* data = nullptr;                      // numel * dtype_size(dtype) bytes
};

struct Obj {
  Kind kind = Kind::None;
  bool b = false;
  bool py2_str = false;  // Bytes from STRING / BINSTRING / SHORT_BINSTRING
  int64_t i = 0;
  double f = 0.0;
  std::string bytes;  // Str (UTF-8), Bytes, BigInt
  // Large Bytes refer to the input instead of a copy (the input outlives the Unpickler's objects).
  const uint8_t* view = nullptr;
  std::size_t view_size = 0;
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
  Tensor tensor;            // Array data (contiguous, native byte order)
  // Storage / TensorRef
  std::shared_ptr<StorageData> storage;
  int64_t storage_offset = 0;  // elements: a legacy storage view's offset, or a tensor's
  Shape size, stride;

  // The bytes of a Bytes object (whether copied or a view of the input).
  std::string_view payload() const {
    return view ? std::string_view(reinterpret_cast<const char*>(view), view_size) : std::string_view(bytes);
  }
  bool is_text() const { return kind == Kind::Str || (kind == Kind::Bytes && py2_str); }
  // Text as UTF-8 (a Python 2 str is decoded as latin-1, as pickle.load(encoding="latin1") does).
  std::string text() const;
  // Python's name of the kind, for messages ("dict", "str", "numpy.ndarray", ...).
  const char* type_name() const;
};

class Unpickler {
 public:
  // `what` names the input in messages ("file /x/model.pkl").
  Unpickler(const uint8_t* data, std::size_t size, std::string what);

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

  // numpy helpers
  Obj* make_dtype(Obj* descr);
  void fill_array(Obj* array, const Shape& shape, Obj* dtype, bool fortran, Obj* data);
  // torch helpers
  Obj* rebuild_tensor(const std::vector<Obj*>& args, const char* func);

  const uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::string what_;
  std::vector<std::unique_ptr<Obj>> arena_;
  std::vector<Obj*> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint64_t, Obj*> memo_;
  PersistentLoad persistent_load_;
  BytesLoad load_from_bytes_;
  std::size_t op_start_ = 0;
};

// Shape from a tuple/list of ints (checked non-negative); `what` names it in messages.
Shape to_shape(const Unpickler& u, const Obj* o, const char* what);
// Dict lookup by text key; null when absent.
Obj* dict_get(const Obj* dict, const std::string& key);
// Turns a TensorRef (whose storage has data) or a ready Array into a contiguous CPU Tensor;
// throws CheckpointError for an unsupported array or a view outside its storage.
Tensor to_tensor(const Unpickler& u, const Obj* o, const std::string& name);

}  // namespace backbone::detail::pickle
