#include "server/model/gguf.hpp"

#include "common/bytes.hpp"

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace llamawire {
namespace {

using kernels::TensorType;

constexpr std::uint32_t kMaxDims = 4;
constexpr int kMaxNesting = 8;
constexpr std::uint64_t kMaxKeyBytes = 1 << 16;
constexpr std::uint64_t kMaxNameBytes = 1 << 16;

std::size_t fixed_size(GgufType t) {
  switch (t) {
    case GgufType::u8:
    case GgufType::i8:
    case GgufType::boolean: return 1;
    case GgufType::u16:
    case GgufType::i16: return 2;
    case GgufType::u32:
    case GgufType::i32:
    case GgufType::f32: return 4;
    case GgufType::u64:
    case GgufType::i64:
    case GgufType::f64: return 8;
    case GgufType::string:
    case GgufType::array: return 0;
  }
  return 0;
}

bool valid_type(std::uint32_t t) { return t <= 12; }

std::string quote(std::string_view s) {
  std::string out = "'";
  for (const char c : s.substr(0, 200)) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[b >> 4];
      out += hex[b & 15];
    } else {
      out += c;
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

// A cursor over the file with the checks every read needs; `where` says what is being read.
class Cursor {
 public:
  Cursor(std::span<const std::uint8_t> bytes, const GgufFile& f) : r_(bytes), f_(f), bytes_(bytes) {}

  template <class T>
  Result<T> read(const std::string& where) {
    const auto v = r_.read<T>();
    if (!v) return truncated(where);
    return *v;
  }
  Result<std::string_view> string(const std::string& where, std::uint64_t max_len) {
    const auto len = r_.read<std::uint64_t>();
    if (!len) return truncated(where + " (string length)");
    if (*len > r_.remaining()) {
      return f_.error(where + ": string length " + std::to_string(*len) + " runs past the end of the file (" +
                      std::to_string(r_.remaining()) + " bytes left)");
    }
    if (*len > max_len) {
      return f_.error(where + ": string length " + std::to_string(*len) + " exceeds the limit " + std::to_string(max_len));
    }
    const auto b = r_.bytes(static_cast<std::size_t>(*len));
    return std::string_view(reinterpret_cast<const char*>(b->data()), b->size());
  }
  Result<std::span<const std::uint8_t>> bytes(std::uint64_t n, const std::string& where) {
    if (n > r_.remaining()) {
      return f_.error(where + ": " + std::to_string(n) + " bytes run past the end of the file (" +
                      std::to_string(r_.remaining()) + " bytes left)");
    }
    return *r_.bytes(static_cast<std::size_t>(n));
  }
  std::size_t position() const { return r_.position(); }
  std::size_t remaining() const { return r_.remaining(); }
  Error fail(const std::string& what) const { return f_.error(what); }
  std::span<const std::uint8_t> between(std::size_t from, std::size_t to) const { return bytes_.subspan(from, to - from); }

 private:
  Error truncated(const std::string& where) { return f_.error(where + ": the file ends early (truncated)"); }
  ByteReader r_;
  const GgufFile& f_;
  std::span<const std::uint8_t> bytes_;
};

Result<void> read_value(Cursor& c, GgufType type, GgufValue& v, const std::string& where, int depth);

Result<void> read_scalar(Cursor& c, GgufType type, GgufValue& v, const std::string& where) {
  v.type = type;
  switch (type) {
    case GgufType::u8: { auto x = c.read<std::uint8_t>(where); if (!x) return x.error(); v.u = *x; break; }
    case GgufType::i8: { auto x = c.read<std::int8_t>(where); if (!x) return x.error(); v.i = *x; break; }
    case GgufType::u16: { auto x = c.read<std::uint16_t>(where); if (!x) return x.error(); v.u = *x; break; }
    case GgufType::i16: { auto x = c.read<std::int16_t>(where); if (!x) return x.error(); v.i = *x; break; }
    case GgufType::u32: { auto x = c.read<std::uint32_t>(where); if (!x) return x.error(); v.u = *x; break; }
    case GgufType::i32: { auto x = c.read<std::int32_t>(where); if (!x) return x.error(); v.i = *x; break; }
    case GgufType::u64: { auto x = c.read<std::uint64_t>(where); if (!x) return x.error(); v.u = *x; break; }
    case GgufType::i64: { auto x = c.read<std::int64_t>(where); if (!x) return x.error(); v.i = *x; break; }
    case GgufType::f32: { auto x = c.read<float>(where); if (!x) return x.error(); v.f = *x; break; }
    case GgufType::f64: { auto x = c.read<double>(where); if (!x) return x.error(); v.f = *x; break; }
    case GgufType::boolean: {
      auto x = c.read<std::uint8_t>(where);
      if (!x) return x.error();
      v.u = *x != 0 ? 1 : 0;
      break;
    }
    case GgufType::string: {
      auto s = c.string(where, UINT64_MAX);
      if (!s) return s.error();
      v.s = *s;
      break;
    }
    case GgufType::array: break;
  }
  return {};
}

Result<void> read_value(Cursor& c, GgufType type, GgufValue& v, const std::string& where, int depth) {
  if (type != GgufType::array) return read_scalar(c, type, v, where);
  v.type = GgufType::array;
  const auto et = c.read<std::uint32_t>(where + " (array type)");
  if (!et) return et.error();
  const auto count = c.read<std::uint64_t>(where + " (array count)");
  if (!count) return count.error();
  if (!valid_type(*et)) return c.fail(where + ": array element type " + std::to_string(*et) + " is not a GGUF type (0-12)");
  v.elem = static_cast<GgufType>(*et);
  v.count = *count;
  if (const std::size_t es = fixed_size(v.elem); es != 0) {
    std::uint64_t total = 0;
    if (__builtin_mul_overflow(*count, static_cast<std::uint64_t>(es), &total) || total > c.remaining()) {
      return c.fail(where + ": array of " + std::to_string(*count) + " " + std::string(gguf_type_name(v.elem)) +
                    " runs past the end of the file");
    }
    auto b = c.bytes(total, where);
    if (!b) return b.error();
    v.raw = *b;
    return {};
  }
  // Strings and arrays take at least 8 bytes each: a count the file cannot hold is refused
  // before anything is reserved.
  if (*count > c.remaining() / 8) {
    return c.fail(where + ": array count " + std::to_string(*count) + " is more than the rest of the file can hold");
  }
  if (v.elem == GgufType::string) {
    v.strings.reserve(static_cast<std::size_t>(*count));
    for (std::uint64_t k = 0; k < *count; ++k) {
      auto s = c.string(where + "[" + std::to_string(k) + "]", UINT64_MAX);
      if (!s) return s.error();
      v.strings.push_back(*s);
    }
    return {};
  }
  if (depth >= kMaxNesting) {
    return c.fail(where + ": arrays nested deeper than " + std::to_string(kMaxNesting));
  }
  const std::size_t start = c.position();
  for (std::uint64_t k = 0; k < *count; ++k) {
    GgufValue inner;
    if (auto r = read_value(c, GgufType::array, inner, where + "[" + std::to_string(k) + "]", depth + 1); !r) return r;
  }
  v.raw = c.between(start, c.position());  // the nested arrays' bytes, kept whole
  return {};
}

std::string dims_text(const GgufTensor& t) {
  std::string s = "[";
  for (std::uint32_t d = 0; d < t.n_dims; ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "]";
}

// One key-value pair.
Result<GgufKv> read_kv(Cursor& c, std::uint64_t k) {
  const std::string where = "metadata entry " + std::to_string(k);
  auto key = c.string(where + " (key)", kMaxKeyBytes);
  if (!key) return key.error();
  const std::string kwhere = "key " + quote(*key);
  const auto type = c.read<std::uint32_t>(kwhere + " (value type)");
  if (!type) return type.error();
  if (!valid_type(*type)) {
    return c.fail(kwhere + ": value type " + std::to_string(*type) + " is not a GGUF type (0-12)");
  }
  GgufKv kv;
  kv.key = *key;
  if (auto r = read_value(c, static_cast<GgufType>(*type), kv.value, kwhere, 0); !r) return r.error();
  return kv;
}

// One tensor info: name, shape, type and offset, each checked (the data is checked against
// the file once the data section's start is known).
Result<GgufTensor> read_tensor_info(Cursor& c, std::uint64_t k, std::uint32_t alignment) {
  const std::string where = "tensor info " + std::to_string(k);
  auto tname = c.string(where + " (name)", kMaxNameBytes);
  if (!tname) return tname.error();
  GgufTensor t;
  t.name = *tname;
  const std::string twhere = "tensor " + quote(*tname);
  const auto nd = c.read<std::uint32_t>(twhere + " (dimensions)");
  if (!nd) return nd.error();
  if (*nd == 0 || *nd > kMaxDims) {
    return c.fail(twhere + ": " + std::to_string(*nd) + " dimensions (1 to 4 are allowed)");
  }
  t.n_dims = *nd;
  std::uint64_t elems = 1;
  for (std::uint32_t d = 0; d < *nd; ++d) {
    const auto ne = c.read<std::uint64_t>(twhere + " (shape)");
    if (!ne) return ne.error();
    if (*ne == 0 || *ne > (std::uint64_t{1} << 40)) {
      return c.fail(twhere + ": dimension " + std::to_string(d) + " is " + std::to_string(*ne) +
                     " (must be in [1, 2^40])");
    }
    t.ne[d] = *ne;
    if (__builtin_mul_overflow(elems, *ne, &elems) || elems > (std::uint64_t{1} << 48)) {
      return c.fail(twhere + ": shape " + dims_text(t) + " has too many elements");
    }
  }
  const auto type = c.read<std::uint32_t>(twhere + " (type)");
  if (!type) return type.error();
  const auto tr = kernels::type_traits(*type);
  if (!tr || !tr->weights) {
    return c.fail(twhere + ": tensor type id " + std::to_string(*type) +
                   " is not supported (supported: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K)");
  }
  t.type = static_cast<TensorType>(*type);
  if (t.ne[0] % static_cast<std::uint64_t>(tr->block) != 0) {
    return c.fail(twhere + ": row length " + std::to_string(t.ne[0]) + " is not a multiple of " +
                   std::to_string(tr->block) + ", the block size of " + std::string(tr->name));
  }
  t.bytes = t.ne[0] / static_cast<std::uint64_t>(tr->block) * tr->bytes * t.rows();
  const auto off = c.read<std::uint64_t>(twhere + " (offset)");
  if (!off) return off.error();
  t.offset = *off;
  if (t.offset % alignment != 0) {
    return c.fail(twhere + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                   std::to_string(alignment));
  }
  return t;
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  static constexpr std::string_view names[] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                               "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < 13 ? names[i] : "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::u8: case GgufType::i8: case GgufType::u16: case GgufType::i16: case GgufType::u32:
    case GgufType::i32: case GgufType::u64: case GgufType::i64: return true;
    default: return false;
  }
}

std::optional<std::int64_t> GgufValue::as_int() const {
  switch (type) {
    case GgufType::i8: case GgufType::i16: case GgufType::i32: case GgufType::i64: return i;
    case GgufType::u8: case GgufType::u16: case GgufType::u32: case GgufType::u64:
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<std::int64_t>(u);
    default: return std::nullopt;
  }
}

std::optional<double> GgufValue::number_at(std::uint64_t k) const {
  if (type != GgufType::array || k >= count) return std::nullopt;
  const std::size_t es = fixed_size(elem);
  if (es == 0) return std::nullopt;
  const std::uint8_t* p = raw.data() + k * es;
  switch (elem) {
    case GgufType::f32: { float v; std::memcpy(&v, p, 4); return v; }
    case GgufType::f64: { double v; std::memcpy(&v, p, 8); return v; }
    default: {
      const auto v = int_at(k);
      if (!v) return std::nullopt;
      return static_cast<double>(*v);
    }
  }
}

std::optional<std::int64_t> GgufValue::int_at(std::uint64_t k) const {
  if (type != GgufType::array || k >= count) return std::nullopt;
  const std::size_t es = fixed_size(elem);
  if (es == 0) return std::nullopt;
  const std::uint8_t* p = raw.data() + k * es;
  switch (elem) {
    case GgufType::u8: case GgufType::boolean: return p[0];
    case GgufType::i8: return static_cast<std::int8_t>(p[0]);
    case GgufType::u16: { std::uint16_t v; std::memcpy(&v, p, 2); return v; }
    case GgufType::i16: { std::int16_t v; std::memcpy(&v, p, 2); return v; }
    case GgufType::u32: { std::uint32_t v; std::memcpy(&v, p, 4); return v; }
    case GgufType::i32: { std::int32_t v; std::memcpy(&v, p, 4); return v; }
    case GgufType::i64: { std::int64_t v; std::memcpy(&v, p, 8); return v; }
    case GgufType::u64: {
      std::uint64_t v;
      std::memcpy(&v, p, 8);
      if (v > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<std::int64_t>(v);
    }
    default: return std::nullopt;
  }
}

bool is_gguf(std::span<const std::uint8_t> head) {
  if (head.size() < 4) return false;
  std::uint32_t m;
  std::memcpy(&m, head.data(), 4);
  return boost::endian::little_to_native(m) == kGgufMagic;
}

Error GgufFile::error(std::string_view what) const { return make_error(errc::bad_checkpoint, name_ + ": " + std::string(what)); }

Result<GgufFile> GgufFile::parse(std::span<const std::uint8_t> bytes, const std::string& name) {
  GgufFile f;
  f.name_ = name;
  f.bytes_ = bytes;
  Cursor c(bytes, f);
  const auto magic = c.read<std::uint32_t>("header");
  if (!magic) return magic.error();
  if (*magic != kGgufMagic) return f.error("not a GGUF file (bad magic)");
  const auto version = c.read<std::uint32_t>("header (version)");
  if (!version) return version.error();
  if (*version == 1) return f.error("GGUF version 1 is not supported (2 and 3 are)");
  if (*version != 2 && *version != 3) {
    const std::uint32_t swapped = boost::endian::endian_reverse(*version);
    if (swapped == 2 || swapped == 3) return f.error("big-endian GGUF files are not supported");
    return f.error("GGUF version " + std::to_string(*version) + " is not supported (2 and 3 are)");
  }
  f.version_ = *version;
  const auto n_tensors = c.read<std::uint64_t>("header (tensor count)");
  if (!n_tensors) return n_tensors.error();
  const auto n_kv = c.read<std::uint64_t>("header (metadata count)");
  if (!n_kv) return n_kv.error();
  // A key-value pair takes at least 12 bytes and a tensor info at least 28.
  if (*n_kv > c.remaining() / 12) {
    return f.error("header: metadata count " + std::to_string(*n_kv) + " is more than the file can hold");
  }
  if (*n_tensors > c.remaining() / 28) {
    return f.error("header: tensor count " + std::to_string(*n_tensors) + " is more than the file can hold");
  }
  f.kvs_.reserve(static_cast<std::size_t>(*n_kv));
  std::unordered_set<std::string_view> keys;
  for (std::uint64_t k = 0; k < *n_kv; ++k) {
    auto kv = read_kv(c, k);
    if (!kv) return kv.error();
    if (!keys.insert(kv->key).second) return f.error("key " + quote(kv->key) + ": appears twice");
    f.kvs_.push_back(std::move(*kv));
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    const auto v = a->as_int();
    if (!a->is_integer() || !v || *v <= 0 || *v > (1 << 24) || (*v & (*v - 1)) != 0) {
      return f.error("key 'general.alignment': must be a power of two in [1, 2^24]");
    }
    f.alignment_ = static_cast<std::uint32_t>(*v);
  }
  f.tensors_.reserve(static_cast<std::size_t>(*n_tensors));
  std::unordered_set<std::string_view> names;
  for (std::uint64_t k = 0; k < *n_tensors; ++k) {
    auto t = read_tensor_info(c, k, f.alignment_);
    if (!t) return t.error();
    if (!names.insert(t->name).second) return f.error("tensor " + quote(t->name) + ": appears twice");
    f.tensors_.push_back(*t);
  }
  const std::uint64_t info_end = c.position();
  f.data_offset_ = (info_end + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  if (f.data_offset_ > bytes.size()) {
    if (!f.tensors_.empty()) return f.error("the file ends before its data section (truncated)");
    f.data_offset_ = bytes.size();
  }
  const std::uint64_t data_bytes = bytes.size() - f.data_offset_;
  for (const GgufTensor& t : f.tensors_) {
    std::uint64_t end = 0;
    if (__builtin_add_overflow(t.offset, t.bytes, &end) || end > data_bytes) {
      return f.error("tensor " + quote(t.name) + ": data at offset " + std::to_string(t.offset) + " (+" +
                     std::to_string(t.bytes) + " bytes) runs past the end of the file (data section " +
                     std::to_string(data_bytes) + " bytes): truncated?");
    }
  }
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& kv : kvs_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const GgufTensor* GgufFile::tensor(std::string_view tname) const {
  for (const auto& t : tensors_) {
    if (t.name == tname) return &t;
  }
  return nullptr;
}

std::span<const std::uint8_t> GgufFile::tensor_bytes(const GgufTensor& t) const {
  return bytes_.subspan(static_cast<std::size_t>(data_offset_ + t.offset), static_cast<std::size_t>(t.bytes));
}

Result<std::int64_t> GgufFile::get_int(std::string_view key, std::int64_t lo, std::int64_t hi,
                                       std::optional<std::int64_t> fallback) const {
  const GgufValue* v = find(key);
  const std::string where = "key " + quote(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    return error(where + ": missing");
  }
  if (!v->is_integer()) return error(where + ": is a " + std::string(gguf_type_name(v->type)) + ", expected an integer");
  const auto x = v->as_int();
  if (!x || *x < lo || *x > hi) {
    return error(where + ": value " + (x ? std::to_string(*x) : std::to_string(v->u)) + " out of range [" +
                 std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return *x;
}

Result<double> GgufFile::get_float(std::string_view key, std::optional<double> fallback) const {
  const GgufValue* v = find(key);
  const std::string where = "key " + quote(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    return error(where + ": missing");
  }
  if (!v->is_float()) return error(where + ": is a " + std::string(gguf_type_name(v->type)) + ", expected f32 or f64");
  return v->f;
}

Result<std::string_view> GgufFile::get_string(std::string_view key, std::optional<std::string_view> fallback) const {
  const GgufValue* v = find(key);
  const std::string where = "key " + quote(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    return error(where + ": missing");
  }
  if (v->type != GgufType::string) return error(where + ": is a " + std::string(gguf_type_name(v->type)) + ", expected a string");
  return v->s;
}

Result<bool> GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type != GgufType::boolean) {
    return error("key " + quote(key) + ": is a " + std::string(gguf_type_name(v->type)) + ", expected a bool");
  }
  return v->u != 0;
}

}  // namespace llamawire
