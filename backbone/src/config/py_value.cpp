// SPDX-License-Identifier: Apache-2.0
#include "config/py_value.h"
#include "backbone/error.h"
#include "core/utf8.h"

#include <charconv>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <stdexcept>
#include <system_error>

namespace backbone::detail {

PyValue PyValue::boolean(bool v) {
  PyValue r;
  r.kind = PyKind::Bool;
  r.b = v;
  return r;
}
PyValue PyValue::integer(int64_t v) {
  PyValue r;
  r.kind = PyKind::Int;
  r.i = v;
  return r;
}
PyValue PyValue::floating(double v) {
  PyValue r;
  r.kind = PyKind::Float;
  r.f = v;
  return r;
}
PyValue PyValue::str(std::string v) {
  PyValue r;
  r.kind = PyKind::Str;
  r.s = std::move(v);
  return r;
}
PyValue PyValue::list(std::vector<PyValue> v, PyKind kind) {
  PyValue r;
  r.kind = kind;
  r.items = std::move(v);
  return r;
}
PyValue PyValue::cfg_node() {
  PyValue r;
  r.kind = PyKind::Node;
  return r;
}

void PyValue::set_origin(const std::string& file) {
  origin = file;
  for (auto& item : items) item.set_origin(file);
  for (auto& kv : node) kv.second.set_origin(file);
}

// ---------------------------------------------------------------------------------------------
// repr / str

std::string py_type(const PyValue& v) {
  switch (v.kind) {
    case PyKind::None: return "<class 'NoneType'>";
    case PyKind::Bool: return "<class 'bool'>";
    case PyKind::Int: return "<class 'int'>";
    case PyKind::Float: return "<class 'float'>";
    case PyKind::Str: return "<class 'str'>";
    case PyKind::List: return "<class 'list'>";
    case PyKind::Tuple: return "<class 'tuple'>";
    case PyKind::Dict: return "<class 'dict'>";
    case PyKind::Node: return "<class 'detectron2.config.config.CfgNode'>";
  }
  return "<class 'object'>";
}

std::string py_repr_float(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  // Shortest digit string that reads back to the same double (Python's repr).
  char buf[64];
  int prec = 1;
  for (; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*e", prec - 1, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s(buf);
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    s.erase(0, 1);
  }
  const size_t epos = s.find('e');
  const int exp10 = std::atoi(s.c_str() + epos + 1);
  std::string digits;
  for (size_t k = 0; k < epos; ++k)
    if (s[k] != '.') digits += s[k];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exp10 < -4 || exp10 >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof(e), "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    out += e;
  } else if (exp10 < 0) {
    out = "0." + std::string(static_cast<size_t>(-exp10 - 1), '0') + digits;
  } else {
    const size_t int_len = static_cast<size_t>(exp10) + 1;
    if (digits.size() <= int_len) {
      out = digits + std::string(int_len - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, int_len) + "." + digits.substr(int_len);
    }
  }
  return neg ? "-" + out : out;
}

std::string py_repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

namespace {

std::string indent_lines(const std::string& s, int spaces) {
  // yacs' _indent: every line but the first gets `spaces` more spaces.
  const size_t nl = s.find('\n');
  if (nl == std::string::npos) return s;
  std::string out = s.substr(0, nl);
  size_t pos = nl;
  while (pos != std::string::npos) {
    const size_t next = s.find('\n', pos + 1);
    out += "\n" + std::string(static_cast<size_t>(spaces), ' ') +
           s.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    pos = next;
  }
  return out;
}

}  // namespace

std::string py_repr(const PyValue& v) {
  switch (v.kind) {
    case PyKind::None: return "None";
    case PyKind::Bool: return v.b ? "True" : "False";
    case PyKind::Int: return std::to_string(v.i);
    case PyKind::Float: return py_repr_float(v.f);
    case PyKind::Str: return py_repr_string(v.s);
    case PyKind::List:
    case PyKind::Tuple: {
      const bool tuple = v.kind == PyKind::Tuple;
      std::string out = tuple ? "(" : "[";
      for (size_t k = 0; k < v.items.size(); ++k) {
        if (k) out += ", ";
        out += py_repr(v.items[k]);
      }
      if (tuple && v.items.size() == 1) out += ",";
      out += tuple ? ")" : "]";
      return out;
    }
    case PyKind::Dict: {
      std::string out = "{";
      for (size_t k = 0; k + 1 < v.items.size(); k += 2) {
        if (k) out += ", ";
        out += py_repr(v.items[k]) + ": " + py_repr(v.items[k + 1]);
      }
      return out + "}";
    }
    case PyKind::Node: return py_str(v);
  }
  return "";
}

std::string py_str(const PyValue& v) {
  if (v.kind == PyKind::Str) return v.s;
  if (v.kind != PyKind::Node) return py_repr(v);
  // yacs' CfgNode.__str__
  std::string out;
  bool first = true;
  for (const auto& kv : v.node) {
    const std::string sep = kv.second.is_node() ? "\n" : " ";
    const std::string attr = indent_lines(kv.first + ":" + sep + py_str(kv.second), 2);
    if (!first) out += "\n";
    out += attr;
    first = false;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// ast.literal_eval

namespace {

using detail::append_utf8;

bool is_ident_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// A recursive-descent reader for the literal subset of Python's expression grammar. Every
// failure (what Python reports as SyntaxError or ValueError) is `false`; brackets nested deeper
// than kMaxLiteralNesting (Python's own parser stops there: "too many nested parentheses") are a
// ConfigError, so that no value can exhaust the stack.
class LiteralParser {
 public:
  explicit LiteralParser(const std::string& text) : t_(text) {}

  bool parse(PyValue* out) {
    // literal_eval strips leading spaces and tabs; parse(mode="eval") then allows trailing
    // whitespace, newlines and comments.
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t')) ++p_;
    if (p_ < t_.size() && (t_[p_] == '\n' || t_[p_] == '\r' || t_[p_] == '#')) return false;
    PyValue first;
    if (!expr(&first)) return false;
    skip();
    if (peek() == ',') {
      // A bare tuple: "1, 2" is (1, 2).
      std::vector<PyValue> items{first};
      while (peek() == ',') {
        ++p_;
        skip();
        if (at_end_of_line()) break;
        PyValue item;
        if (!expr(&item)) return false;
        items.push_back(item);
        skip();
      }
      first = PyValue::list(std::move(items), PyKind::Tuple);
    }
    // Trailing whitespace, newlines and comments.
    while (p_ < t_.size()) {
      const char c = t_[p_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
        ++p_;
      } else if (c == '#') {
        while (p_ < t_.size() && t_[p_] != '\n') ++p_;
      } else {
        return false;
      }
    }
    *out = first;
    return true;
  }

 private:
  char peek() const { return p_ < t_.size() ? t_[p_] : '\0'; }
  bool at_end_of_line() const {
    return p_ >= t_.size() || t_[p_] == '\n' || t_[p_] == '\r' || t_[p_] == '#';
  }

  // Whitespace between tokens: inside brackets newlines and comments too.
  void skip() {
    while (p_ < t_.size()) {
      const char c = t_[p_];
      if (c == ' ' || c == '\t' || c == '\f') {
        ++p_;
      } else if (c == '\\' && p_ + 1 < t_.size() && t_[p_ + 1] == '\n') {
        p_ += 2;
      } else if (depth_ > 0 && (c == '\n' || c == '\r')) {
        ++p_;
      } else if (depth_ > 0 && c == '#') {
        while (p_ < t_.size() && t_[p_] != '\n') ++p_;
      } else {
        break;
      }
    }
  }

  bool expr(PyValue* out) {
    skip();
    const char c = peek();
    if (c == '+' || c == '-') {
      ++p_;
      skip();
      // The operand must be a number literal itself (not a bool, not another sign).
      const char d = peek();
      if (!(std::isdigit(static_cast<unsigned char>(d)) || d == '.')) return false;
      PyValue num;
      if (!number(&num)) return false;
      if (c == '-') {
        if (num.kind == PyKind::Int) {
          num.i = -num.i;
        } else {
          num.f = -num.f;
        }
      }
      *out = num;
      return after_atom();
    }
    if (!atom(out)) return false;
    return after_atom();
  }

  // An atom followed by an operator, a call, a subscript or an attribute is not a literal.
  bool after_atom() {
    skip();
    const char c = peek();
    return !(c == '+' || c == '-' || c == '*' || c == '/' || c == '%' || c == '.' || c == '(' ||
             c == '[' || c == '@' || c == '&' || c == '|' || c == '^' || c == '<' || c == '>' ||
             c == '=' || c == '!' || c == '~' || is_ident_char(c) || c == '\'' || c == '"');
  }

  bool atom(PyValue* out) {
    const char c = peek();
    if (c == '[' || c == '(' || c == '{') return container(out);
    if (c == '\'' || c == '"') return strings(out);
    if (std::isdigit(static_cast<unsigned char>(c)) ||
        (c == '.' && p_ + 1 < t_.size() && std::isdigit(static_cast<unsigned char>(t_[p_ + 1]))))
      return number(out);
    if (is_ident_start(c)) {
      size_t q = p_;
      while (q < t_.size() && is_ident_char(t_[q])) ++q;
      const std::string word = t_.substr(p_, q - p_);
      if (q < t_.size() && (t_[q] == '\'' || t_[q] == '"')) {
        // A string prefix: r/u (b, f and their combinations are not str literals).
        if (word == "r" || word == "R" || word == "u" || word == "U") return strings(out);
        return false;
      }
      p_ = q;
      if (word == "True") {
        *out = PyValue::boolean(true);
      } else if (word == "False") {
        *out = PyValue::boolean(false);
      } else if (word == "None") {
        *out = PyValue::none();
      } else {
        return false;
      }
      return true;
    }
    return false;
  }

  bool container(PyValue* out) {
    const char open = t_[p_++];
    const char close = open == '[' ? ']' : open == '(' ? ')' : '}';
    if (++depth_ > kMaxLiteralNesting)
      throw ConfigError("the value nests brackets deeper than " + std::to_string(kMaxLiteralNesting) +
                        " levels (Python's parser limit: too many nested parentheses)");
    std::vector<PyValue> items;
    bool saw_comma = false;
    bool is_dict = false;
    skip();
    while (peek() != close) {
      if (p_ >= t_.size()) return false;
      PyValue item;
      if (!expr(&item)) return false;
      items.push_back(item);
      skip();
      if (open == '{') {
        const bool colon = peek() == ':';
        if (items.size() == 1) is_dict = colon;
        if (colon != is_dict) return false;
        if (colon) {
          ++p_;
          PyValue value;
          if (!expr(&value)) return false;
          items.push_back(value);
          skip();
        }
      }
      if (peek() == ',') {
        ++p_;
        saw_comma = true;
        skip();
      } else if (peek() != close) {
        return false;
      }
    }
    ++p_;
    --depth_;
    if (open == '[') {
      *out = PyValue::list(std::move(items));
    } else if (open == '(') {
      if (items.size() == 1 && !saw_comma) {
        *out = items[0];
      } else {
        *out = PyValue::list(std::move(items), PyKind::Tuple);
      }
    } else {
      if (!items.empty() && !is_dict) return false;  // a set: not a CfgNode value type
      *out = PyValue::list(std::move(items), PyKind::Dict);
    }
    return true;
  }

  // Adjacent string literals concatenate: 'a' "b" == 'ab'.
  bool strings(PyValue* out) {
    std::string value;
    bool any = false;
    for (;;) {
      skip();
      size_t q = p_;
      bool raw = false;
      if (q < t_.size() && is_ident_start(t_[q])) {
        if (t_[q] == 'r' || t_[q] == 'R') {
          raw = true;
        } else if (!(t_[q] == 'u' || t_[q] == 'U')) {
          break;
        }
        ++q;
      }
      if (q >= t_.size() || (t_[q] != '\'' && t_[q] != '"')) break;
      p_ = q;
      if (!string_literal(raw, &value)) return false;
      any = true;
    }
    if (!any) return false;
    *out = PyValue::str(value);
    return true;
  }

  bool string_literal(bool raw, std::string* value) {
    const char quote = t_[p_];
    const bool triple = t_.compare(p_, 3, std::string(3, quote)) == 0;
    p_ += triple ? 3 : 1;
    for (;;) {
      if (p_ >= t_.size()) return false;
      const char c = t_[p_];
      if (triple ? t_.compare(p_, 3, std::string(3, quote)) == 0 : c == quote) {
        p_ += triple ? 3 : 1;
        return true;
      }
      if (c == '\n' && !triple) return false;
      if (c != '\\') {
        *value += c;
        ++p_;
        continue;
      }
      if (p_ + 1 >= t_.size()) return false;
      const char e = t_[p_ + 1];
      if (raw) {
        *value += c;
        *value += e;
        p_ += 2;
        continue;
      }
      p_ += 2;
      switch (e) {
        case '\n': break;
        case '\\': *value += '\\'; break;
        case '\'': *value += '\''; break;
        case '"': *value += '"'; break;
        case 'a': *value += '\a'; break;
        case 'b': *value += '\b'; break;
        case 'f': *value += '\f'; break;
        case 'n': *value += '\n'; break;
        case 'r': *value += '\r'; break;
        case 't': *value += '\t'; break;
        case 'v': *value += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (p_ + n > t_.size()) return false;
          uint32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            const char h = t_[p_ + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) return false;
            cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                      ? h - '0'
                                                      : std::tolower(h) - 'a' + 10);
          }
          if (cp > 0x10FFFF) return false;
          append_utf8(*value, cp);
          p_ += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '7'; ++k)
              cp = cp * 8 + static_cast<uint32_t>(t_[p_++] - '0');
            append_utf8(*value, cp);
          } else if (e == 'N') {
            return false;  // \N{name}: needs Python's Unicode name table
          } else {
            *value += '\\';
            *value += e;
          }
      }
    }
  }

  // Python's number tokens: 0x/0o/0b integers, decimal integers (no leading zeros), floats,
  // digits grouped with single underscores. Imaginary numbers are not CfgNode values.
  bool number(PyValue* out) {
    const size_t start = p_;
    auto digits = [&](auto is_digit) {
      // One or more digits, single underscores between them.
      const size_t s = p_;
      if (p_ >= t_.size() || !is_digit(t_[p_])) return false;
      while (p_ < t_.size()) {
        if (is_digit(t_[p_])) {
          ++p_;
        } else if (t_[p_] == '_' && p_ + 1 < t_.size() && is_digit(t_[p_ + 1])) {
          p_ += 2;
        } else {
          break;
        }
      }
      return p_ > s;
    };
    auto dec = [](char c) { return c >= '0' && c <= '9'; };
    auto clean = [&](size_t from, size_t to) {
      std::string s;
      for (size_t k = from; k < to; ++k)
        if (t_[k] != '_') s += t_[k];
      return s;
    };
    if (peek() == '0' && p_ + 1 < t_.size() && std::strchr("xXoObB", t_[p_ + 1]) != nullptr &&
        t_[p_ + 1] != '\0') {
      const char kind = static_cast<char>(std::tolower(t_[p_ + 1]));
      p_ += 2;
      if (peek() == '_') ++p_;
      int base = 16;
      bool ok = false;
      if (kind == 'x') {
        ok = digits([](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
      } else if (kind == 'o') {
        base = 8;
        ok = digits([](char c) { return c >= '0' && c <= '7'; });
      } else {
        base = 2;
        ok = digits([](char c) { return c == '0' || c == '1'; });
      }
      if (!ok || is_ident_char(peek())) return false;
      const std::string s = clean(start + 2, p_);
      int64_t v = 0;
      const auto r = std::from_chars(s.data(), s.data() + s.size(), v, base);
      if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return false;
      *out = PyValue::integer(v);
      return true;
    }
    bool is_float = false;
    if (peek() != '.') digits(dec);
    const size_t int_end = p_;
    if (peek() == '.') {
      is_float = true;
      ++p_;
      if (dec(peek())) digits(dec);
    }
    if (peek() == 'e' || peek() == 'E') {
      const size_t save = p_;
      ++p_;
      if (peek() == '+' || peek() == '-') ++p_;
      if (!digits(dec)) {
        p_ = save;
        return false;
      }
      is_float = true;
    }
    if (peek() == 'j' || peek() == 'J' || is_ident_char(peek())) return false;
    const std::string s = clean(start, p_);
    if (!is_float) {
      // "010" is a SyntaxError; "00" is 0.
      const std::string int_part = clean(start, int_end);
      if (int_part.size() > 1 && int_part[0] == '0' &&
          int_part.find_first_not_of('0') != std::string::npos)
        return false;
      int64_t v = 0;
      const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
      if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return false;
      *out = PyValue::integer(v);
      return true;
    }
    double v = 0.0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ptr != s.data() + s.size()) return false;
    if (r.ec == std::errc::result_out_of_range) {
      // Python: 1e400 is inf, 1e-400 is 0.0.
      const size_t epos = s.find_first_of("eE");
      const bool negative_exp = epos != std::string::npos && s[epos + 1] == '-';
      v = negative_exp ? 0.0 : HUGE_VAL;
    } else if (r.ec != std::errc()) {
      return false;
    }
    *out = PyValue::floating(v);
    return true;
  }

  const std::string& t_;
  size_t p_ = 0;
  int depth_ = 0;
};

}  // namespace

bool literal_eval(const std::string& text, PyValue* out) {
  LiteralParser parser(text);
  PyValue v;
  if (!parser.parse(&v)) return false;
  *out = v;
  return true;
}

PyValue decode_cfg_value(const PyValue& v) {
  if (v.kind != PyKind::Str) return v;
  PyValue decoded;
  if (!literal_eval(v.s, &decoded)) return v;
  decoded.set_origin(v.origin);
  return decoded;
}

// ---------------------------------------------------------------------------------------------
// PyYAML's implicit resolver (yaml/resolver.py) and constructors (yaml/constructor.py)

namespace {

const std::regex& re_bool() {
  static const std::regex re("yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF");
  return re;
}
const std::regex& re_float() {
  static const std::regex re(
      "[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+][0-9]+)?"
      "|\\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
      "|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*"
      "|[-+]?\\.(?:inf|Inf|INF)"
      "|\\.(?:nan|NaN|NAN)");
  return re;
}
const std::regex& re_int() {
  static const std::regex re(
      "[-+]?0b[0-1_]+"
      "|[-+]?0[0-7_]+"
      "|[-+]?(?:0|[1-9][0-9_]*)"
      "|[-+]?0x[0-9a-fA-F_]+"
      "|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+");
  return re;
}
const std::regex& re_null() {
  static const std::regex re("~|null|Null|NULL|");
  return re;
}
const std::regex& re_timestamp() {
  static const std::regex re(
      "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
      "|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \\t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9]"
      "(?:\\.[0-9]*)?(?:[ \\t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?");
  return re;
}

// Resolvers are tried per first character, in PyYAML's registration order.
enum class Tag { Bool, Float, Int, Null, Timestamp, Str };

Tag resolve_tag(const std::string& s) {
  const char c = s.empty() ? '\0' : s[0];
  if (s.empty()) return Tag::Null;
  if (std::strchr("yYnNtTfFoO", c) && std::regex_match(s, re_bool())) return Tag::Bool;
  if (std::strchr("-+0123456789.", c) && std::regex_match(s, re_float())) return Tag::Float;
  if (std::strchr("-+0123456789", c) && std::regex_match(s, re_int())) return Tag::Int;
  if (std::strchr("~nN", c) && std::regex_match(s, re_null())) return Tag::Null;
  if (std::strchr("0123456789", c) && std::regex_match(s, re_timestamp())) return Tag::Timestamp;
  return Tag::Str;
}

// construct_yaml_int / construct_yaml_float (sexagesimal included).
int64_t yaml_int(std::string v) {
  std::string s;
  for (char c : v)
    if (c != '_') s += c;
  int64_t sign = 1;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    if (s[0] == '-') sign = -1;
    s.erase(0, 1);
  }
  auto parse = [&](const std::string& d, int base) {
    int64_t r = 0;
    const auto res = std::from_chars(d.data(), d.data() + d.size(), r, base);
    if (res.ec != std::errc() || res.ptr != d.data() + d.size())
      throw std::runtime_error("integer out of range: " + v);
    return r;
  };
  if (s == "0") return 0;
  if (s.rfind("0b", 0) == 0) return sign * parse(s.substr(2), 2);
  if (s.rfind("0x", 0) == 0) return sign * parse(s.substr(2), 16);
  if (s[0] == '0') return sign * parse(s.substr(1), 8);
  if (s.find(':') != std::string::npos) {
    int64_t value = 0;
    size_t pos = 0;
    while (pos != std::string::npos) {
      const size_t next = s.find(':', pos);
      value = value * 60 + parse(s.substr(pos, next == std::string::npos ? next : next - pos), 10);
      pos = next == std::string::npos ? next : next + 1;
    }
    return sign * value;
  }
  return sign * parse(s, 10);
}

double yaml_float(const std::string& v) {
  std::string s;
  for (char c : v)
    if (c != '_') s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double sign = 1.0;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    if (s[0] == '-') sign = -1.0;
    s.erase(0, 1);
  }
  if (s == ".inf") return sign * HUGE_VAL;
  if (s == ".nan") return std::nan("");
  auto parse = [&](const std::string& d) {
    double r = 0.0;
    const auto res = std::from_chars(d.data(), d.data() + d.size(), r);
    if (res.ptr != d.data() + d.size() ||
        (res.ec != std::errc() && res.ec != std::errc::result_out_of_range))
      throw std::runtime_error("not a float: " + v);
    return r;
  };
  if (s.find(':') != std::string::npos) {
    double value = 0.0;
    size_t pos = 0;
    while (pos != std::string::npos) {
      const size_t next = s.find(':', pos);
      value = value * 60 + parse(s.substr(pos, next == std::string::npos ? next : next - pos));
      pos = next == std::string::npos ? next : next + 1;
    }
    return sign * value;
  }
  return sign * parse(s);
}

}  // namespace

PyValue resolve_plain_scalar(const std::string& text) {
  switch (resolve_tag(text)) {
    case Tag::Null: return PyValue::none();
    case Tag::Bool: {
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
      return PyValue::boolean(c == 'y' || c == 't' || (c == 'o' && text.size() == 2 &&
                                                       std::tolower(text[1]) == 'n'));
    }
    case Tag::Int: return PyValue::integer(yaml_int(text));
    case Tag::Float: return PyValue::floating(yaml_float(text));
    case Tag::Timestamp:
      throw std::runtime_error("value " + text +
                               " is a YAML timestamp (<class 'datetime.date'>), which is not a "
                               "valid config type; quote it to make it a string");
    case Tag::Str: break;
  }
  return PyValue::str(text);
}

// ---------------------------------------------------------------------------------------------
// yaml.safe_dump

namespace {

bool is_break(char c) { return c == '\n'; }
bool is_ws(char c) { return c == '\0' || c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Whether PyYAML's emitter writes `s` as a plain scalar in block context (analyze_scalar and
// choose_scalar_style with allow_unicode=False), and whether it needs double quotes.
void analyze(const std::string& s, bool* plain, bool* double_quoted) {
  *double_quoted = false;
  if (s.empty()) {
    *plain = false;  // resolves to null
    return;
  }
  bool block_indicators = false, line_breaks = false, special = false;
  bool leading_space = false, leading_break = false, trailing_space = false, trailing_break = false;
  bool break_space = false, space_break = false;
  if (s.rfind("---", 0) == 0 || s.rfind("...", 0) == 0) block_indicators = true;
  bool preceded_by_ws = true;
  bool followed_by_ws = s.size() == 1 || is_ws(s[1]);
  bool previous_space = false, previous_break = false;
  for (size_t index = 0; index < s.size(); ++index) {
    const char ch = s[index];
    if (index == 0) {
      if (std::strchr("#,[]{}&*!|>'\"%@`", ch)) block_indicators = true;
      if ((ch == '?' || ch == ':') && followed_by_ws) block_indicators = true;
      if (ch == '-' && followed_by_ws) block_indicators = true;
    } else {
      if (ch == ':' && followed_by_ws) block_indicators = true;
      if (ch == '#' && preceded_by_ws) block_indicators = true;
    }
    if (is_break(ch)) line_breaks = true;
    const unsigned char u = static_cast<unsigned char>(ch);
    if (!(ch == '\n' || (u >= 0x20 && u <= 0x7E))) special = true;  // allow_unicode=False
    if (ch == ' ') {
      if (index == 0) leading_space = true;
      if (index == s.size() - 1) trailing_space = true;
      if (previous_break) break_space = true;
      previous_space = true;
      previous_break = false;
    } else if (is_break(ch)) {
      if (index == 0) leading_break = true;
      if (index == s.size() - 1) trailing_break = true;
      if (previous_space) space_break = true;
      previous_space = false;
      previous_break = true;
    } else {
      previous_space = false;
      previous_break = false;
    }
    preceded_by_ws = is_ws(ch);
    followed_by_ws = index + 2 >= s.size() || is_ws(s[index + 2]);
  }
  bool allow_plain = true, allow_single = true;
  if (leading_space || leading_break || trailing_space || trailing_break) allow_plain = false;
  if (break_space) allow_plain = allow_single = false;
  if (space_break || special) allow_plain = allow_single = false;
  if (line_breaks) allow_plain = false;
  if (block_indicators) allow_plain = false;
  // The implicit resolver must read the plain text back as a string.
  if (allow_plain && resolve_tag(s) != Tag::Str) allow_plain = false;
  *plain = allow_plain;
  *double_quoted = !allow_plain && !allow_single;
}

std::string yaml_string(const std::string& s) {
  bool plain = false, dq = false;
  analyze(s, &plain, &dq);
  if (plain) return s;
  if (!dq) {
    std::string out = "'";
    for (char c : s) {
      if (c == '\'') out += "''";
      else out += c;
    }
    return out + "'";
  }
  // write_double_quoted: escapes by code point (the text is UTF-8).
  std::string out = "\"";
  for (size_t k = 0; k < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[k]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0xF0 && k + 3 < s.size()) {
      cp = ((c & 0x07u) << 18) | ((s[k + 1] & 0x3Fu) << 12) | ((s[k + 2] & 0x3Fu) << 6) | (s[k + 3] & 0x3Fu);
      len = 4;
    } else if (c >= 0xE0 && k + 2 < s.size()) {
      cp = ((c & 0x0Fu) << 12) | ((s[k + 1] & 0x3Fu) << 6) | (s[k + 2] & 0x3Fu);
      len = 3;
    } else if (c >= 0xC0 && k + 1 < s.size()) {
      cp = ((c & 0x1Fu) << 6) | (s[k + 1] & 0x3Fu);
      len = 2;
    }
    k += len;
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case 0x00: out += "\\0"; continue;
      case 0x07: out += "\\a"; continue;
      case 0x08: out += "\\b"; continue;
      case 0x09: out += "\\t"; continue;
      case 0x0A: out += "\\n"; continue;
      case 0x0B: out += "\\v"; continue;
      case 0x0C: out += "\\f"; continue;
      case 0x0D: out += "\\r"; continue;
      case 0x1B: out += "\\e"; continue;
      case 0x85: out += "\\N"; continue;
      case 0xA0: out += "\\_"; continue;
      case 0x2028: out += "\\L"; continue;
      case 0x2029: out += "\\P"; continue;
      default: break;
    }
    if (cp >= 0x20 && cp <= 0x7E) {
      out += static_cast<char>(cp);
      continue;
    }
    char buf[16];
    if (cp <= 0xFF) {
      std::snprintf(buf, sizeof(buf), "\\x%02X", cp);
    } else if (cp <= 0xFFFF) {
      std::snprintf(buf, sizeof(buf), "\\u%04X", cp);
    } else {
      std::snprintf(buf, sizeof(buf), "\\U%08X", cp);
    }
    out += buf;
  }
  return out + "\"";
}

// PyYAML's write_plain / write_single_quoted fold a long scalar at a single space once the line
// is past 80 columns (best_width), continuing on a new line at `indent`. `column` is where the
// scalar starts.
std::string fold_scalar(const std::string& s, size_t column, int indent) {
  bool plain = false, dq = false;
  analyze(s, &plain, &dq);
  const std::string text = yaml_string(s);
  if (dq || s.find('\n') != std::string::npos) return text;  // not folded here
  const size_t best_width = 80;
  std::string out;
  if (!plain) {
    out += '\'';
    ++column;
  }
  size_t k = 0;
  while (k < s.size()) {
    if (s[k] != ' ') {
      if (s[k] == '\'' && !plain) {
        out += "''";
        column += 2;
      } else {
        out += s[k];
        ++column;
      }
      ++k;
      continue;
    }
    size_t end = k;
    while (end < s.size() && s[end] == ' ') ++end;
    const bool single = end == k + 1;
    const bool inner = k != 0 && end != s.size();
    if (single && column > best_width && (plain || inner)) {
      out += "\n" + std::string(static_cast<size_t>(indent), ' ');
      column = static_cast<size_t>(indent);
    } else {
      out.append(end - k, ' ');
      column += end - k;
    }
    k = end;
  }
  if (!plain) out += '\'';
  return out;
}

size_t current_column(const std::string& out) {
  const size_t nl = out.rfind('\n');
  return nl == std::string::npos ? out.size() : out.size() - nl - 1;
}

std::string yaml_scalar(const PyValue& v) {
  switch (v.kind) {
    case PyKind::None: return "null";
    case PyKind::Bool: return v.b ? "true" : "false";
    case PyKind::Int: return std::to_string(v.i);
    case PyKind::Float: {
      if (std::isnan(v.f)) return ".nan";
      if (std::isinf(v.f)) return v.f > 0 ? ".inf" : "-.inf";
      std::string r = py_repr_float(v.f);
      if (r.find('.') == std::string::npos && r.find('e') != std::string::npos)
        r.replace(r.find('e'), 1, ".0e");
      return r;
    }
    case PyKind::Str: return yaml_string(v.s);
    default: return "";
  }
}

bool is_empty_collection(const PyValue& v) {
  return (v.is_sequence() && v.items.empty()) || (v.is_node() && v.node.empty()) ||
         (v.kind == PyKind::Dict && v.items.empty());
}

std::string flow_empty(const PyValue& v) { return v.is_sequence() ? "[]" : "{}"; }

using Entries = std::vector<std::pair<std::string, const PyValue*>>;

Entries mapping_entries(const PyValue& v) {
  Entries entries;
  if (v.is_node()) {
    for (const auto& kv : v.node) entries.emplace_back(kv.first, &kv.second);
  } else {
    for (size_t k = 0; k + 1 < v.items.size(); k += 2)
      entries.emplace_back(py_str(v.items[k]), &v.items[k + 1]);
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  return entries;
}

// PyYAML's serializer: a shared object seen a second time gets the next anchor number; the
// first occurrence is written with &idNNN, later ones as *idNNN.
struct Anchors {
  std::map<int, int> seen;    // shared id -> occurrences so far (pre-pass)
  std::map<int, int> number;  // shared id -> anchor number
  std::map<int, bool> written;
  int next = 0;

  void scan(const PyValue& v) {
    // Empty tuples are never anchored (ignore_aliases); scalars carry no identity here.
    if (v.shared != 0 && !(v.kind == PyKind::Tuple && v.items.empty())) {
      if (++seen[v.shared] == 2) number[v.shared] = ++next;
      if (seen[v.shared] > 1) return;
    }
    if (v.is_sequence()) {
      for (const auto& item : v.items) scan(item);
    } else if (v.is_node() || v.kind == PyKind::Dict) {
      for (const auto& kv : mapping_entries(v)) scan(*kv.second);
    }
  }

  // "" when not anchored; "&id001" for the first occurrence, "*id001" after.
  std::string mark(const PyValue& v) {
    auto it = number.find(v.shared);
    if (v.shared == 0 || it == number.end()) return "";
    char buf[32];
    const bool alias = written[v.shared];
    written[v.shared] = true;
    std::snprintf(buf, sizeof(buf), "%cid%03d", alias ? '*' : '&', it->second);
    return buf;
  }
};

void emit_mapping(const Entries& entries, int indent, bool first_inline, Anchors& anchors, std::string& out);

// A sequence whose "- " markers sit at column `indent`; when first_inline the first marker
// continues the current line.
void emit_sequence(const PyValue& seq, int indent, bool first_inline, Anchors& anchors, std::string& out) {
  bool first = true;
  for (const PyValue& item : seq.items) {
    if (!(first && first_inline)) out += std::string(static_cast<size_t>(indent), ' ');
    first = false;
    out += "-";
    const std::string mark = anchors.mark(item);
    if (!mark.empty() && mark[0] == '*') {
      out += " " + mark + "\n";
      continue;
    }
    if (!mark.empty()) out += " " + mark;
    if (is_empty_collection(item)) {
      out += " " + flow_empty(item) + "\n";
    } else if (item.is_sequence()) {
      if (mark.empty()) {
        out += " ";
        emit_sequence(item, indent + 2, true, anchors, out);
      } else {
        out += "\n";
        emit_sequence(item, indent + 2, false, anchors, out);
      }
    } else if (item.is_node() || item.kind == PyKind::Dict) {
      if (mark.empty()) {
        out += " ";
        emit_mapping(mapping_entries(item), indent + 2, true, anchors, out);
      } else {
        out += "\n";
        emit_mapping(mapping_entries(item), indent + 2, false, anchors, out);
      }
    } else {
      out += " ";
      out += (item.kind == PyKind::Str ? fold_scalar(item.s, current_column(out), indent + 2)
                                       : yaml_scalar(item)) + "\n";
    }
  }
}

void emit_value_after_key(const PyValue& v, int indent, Anchors& anchors, std::string& out) {
  const std::string mark = anchors.mark(v);
  if (!mark.empty() && mark[0] == '*') {
    out += " " + mark + "\n";
    return;
  }
  if (!mark.empty()) out += " " + mark;
  if (is_empty_collection(v)) {
    out += " " + flow_empty(v) + "\n";
  } else if (v.is_sequence()) {
    out += "\n";
    emit_sequence(v, indent, false, anchors, out);  // PyYAML does not indent sequences in mappings
  } else if (v.is_node() || v.kind == PyKind::Dict) {
    out += "\n";
    emit_mapping(mapping_entries(v), indent + 2, false, anchors, out);
  } else {
    out += " ";
    out += (v.kind == PyKind::Str ? fold_scalar(v.s, current_column(out), indent + 2) : yaml_scalar(v)) + "\n";
  }
}

void emit_mapping(const Entries& entries, int indent, bool first_inline, Anchors& anchors, std::string& out) {
  bool first = true;
  for (const auto& kv : entries) {
    if (!(first && first_inline)) out += std::string(static_cast<size_t>(indent), ' ');
    first = false;
    out += yaml_string(kv.first) + ":";
    emit_value_after_key(*kv.second, indent, anchors, out);
  }
}

}  // namespace

std::string dump_yaml(const PyValue& node) {
  if (is_empty_collection(node)) return flow_empty(node) + "\n";
  Anchors anchors;
  anchors.scan(node);
  std::string out;
  emit_mapping(mapping_entries(node), 0, false, anchors, out);
  return out;
}

}  // namespace backbone::detail
