// SPDX-License-Identifier: Apache-2.0
// The values a yacs CfgNode holds, with Python's semantics where detectron2's config system
// depends on them: Python literal parsing (ast.literal_eval, as yacs' _decode_cfg_value uses it),
// repr()/str() (as yacs' error messages print values), PyYAML's implicit typing of plain scalars
// (yaml.safe_load) and PyYAML's safe_dump output (cfg.dump()).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace backbone::detail {

enum class PyKind { None, Bool, Int, Float, Str, List, Tuple, Dict, Node };

struct PyValue {
  PyKind kind = PyKind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::vector<PyValue> items;          // List, Tuple; Dict (a Python dict literal): key, value, key, ...
  std::map<std::string, PyValue> node;  // Node: a CfgNode, keys sorted as cfg.dump() sorts them
  std::string origin;                   // the file the value was read from ("" for defaults / lists)
  // Non-zero when this list is one Python object that several keys share (detectron2's defaults
  // share some tuples, and cfg.dump() then writes YAML anchors &idNNN / aliases *idNNN). A value
  // that replaces it is a new object: 0.
  int shared = 0;

  static PyValue none() { return PyValue{}; }
  static PyValue boolean(bool v);
  static PyValue integer(int64_t v);
  static PyValue floating(double v);
  static PyValue str(std::string v);
  static PyValue list(std::vector<PyValue> v, PyKind kind = PyKind::List);
  static PyValue cfg_node();

  bool is_node() const { return kind == PyKind::Node; }
  bool is_sequence() const { return kind == PyKind::List || kind == PyKind::Tuple; }
  // Sets `origin` on this value and everything below it.
  void set_origin(const std::string& file);
};

// "<class 'int'>", "<class 'detectron2.config.config.CfgNode'>", ...
std::string py_type(const PyValue& v);
// Python's repr(v) / str(v); a CfgNode prints as yacs' CfgNode.__str__.
std::string py_repr(const PyValue& v);
std::string py_str(const PyValue& v);
std::string py_repr_string(const std::string& s);
std::string py_repr_float(double x);
// Python's == (1 == 1.0, [1] != (1,)).
bool py_equal(const PyValue& a, const PyValue& b);

// Brackets a Python literal may nest (CPython's tokenizer refuses a 201st level: "too many nested
// parentheses").
constexpr int kMaxLiteralNesting = 200;

// ast.literal_eval(text): true and *out set when `text` is a Python literal (numbers, strings,
// True/False/None, lists, tuples, dicts, with unary signs); false when Python would raise
// ValueError or SyntaxError (yacs then keeps the text as a string). Brackets nested deeper than
// kMaxLiteralNesting throw ConfigError (instead of exhausting the stack).
bool literal_eval(const std::string& text, PyValue* out);

// yacs' _decode_cfg_value for a value read from YAML or a list: strings are literal_eval'ed
// when they are Python literals, everything else is returned unchanged. Throws literal_eval's
// ConfigError.
PyValue decode_cfg_value(const PyValue& v);

// PyYAML's implicit resolution of a plain (unquoted) scalar: bool, int, float, null or str.
// Throws std::runtime_error for a timestamp (not a valid CfgNode type).
PyValue resolve_plain_scalar(const std::string& text);

// yaml.safe_dump(v) of a CfgNode, as cfg.dump() writes it.
std::string dump_yaml(const PyValue& node);

}  // namespace backbone::detail
