#include "server/model/gguf_writer.hpp"

#include "common/bytes.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace llamawire {
namespace {

void put_str(ByteWriter& w, std::string_view s) {
  w.write(static_cast<std::uint64_t>(s.size()));
  w.bytes(s);
}

template <class T>
std::vector<std::uint8_t> scalar(T v) {
  ByteWriter w;
  w.write(v);
  return w.take();
}

// The payload of a parsed value, as it was in its file.
void put_value(ByteWriter& w, const GgufValue& v) {
  switch (v.type) {
    case GgufType::u8: w.write(static_cast<std::uint8_t>(v.u)); break;
    case GgufType::i8: w.write(static_cast<std::int8_t>(v.i)); break;
    case GgufType::u16: w.write(static_cast<std::uint16_t>(v.u)); break;
    case GgufType::i16: w.write(static_cast<std::int16_t>(v.i)); break;
    case GgufType::u32: w.write(static_cast<std::uint32_t>(v.u)); break;
    case GgufType::i32: w.write(static_cast<std::int32_t>(v.i)); break;
    case GgufType::u64: w.write(v.u); break;
    case GgufType::i64: w.write(v.i); break;
    case GgufType::f32: w.write(static_cast<float>(v.f)); break;
    case GgufType::f64: w.write(v.f); break;
    case GgufType::boolean: w.write(static_cast<std::uint8_t>(v.u)); break;
    case GgufType::string: put_str(w, v.s); break;
    case GgufType::array:
      w.write(static_cast<std::uint32_t>(v.elem));
      w.write(v.count);
      if (v.elem == GgufType::string) {
        for (const auto s : v.strings) put_str(w, s);
      } else {
        w.bytes(v.raw);  // fixed-size elements, or nested arrays as they were
      }
      break;
  }
}

}  // namespace

void GgufWriter::add_u32(const std::string& key, std::uint32_t v) { kvs_.push_back({key, 4, scalar(v)}); }
void GgufWriter::add_i32(const std::string& key, std::int32_t v) { kvs_.push_back({key, 5, scalar(v)}); }
void GgufWriter::add_f32(const std::string& key, float v) { kvs_.push_back({key, 6, scalar(v)}); }
void GgufWriter::add_bool(const std::string& key, bool v) {
  kvs_.push_back({key, 7, scalar(static_cast<std::uint8_t>(v ? 1 : 0))});
}
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  ByteWriter w;
  put_str(w, v);
  kvs_.push_back({key, 8, w.take()});
}
void GgufWriter::add_strings(const std::string& key, const std::vector<std::string>& v) {
  ByteWriter w;
  w.write(static_cast<std::uint32_t>(GgufType::string));
  w.write(static_cast<std::uint64_t>(v.size()));
  for (const auto& s : v) put_str(w, s);
  kvs_.push_back({key, 9, w.take()});
}
void GgufWriter::add_f32s(const std::string& key, const std::vector<float>& v) {
  ByteWriter w;
  w.write(static_cast<std::uint32_t>(GgufType::f32));
  w.write(static_cast<std::uint64_t>(v.size()));
  for (const float x : v) w.write(x);
  kvs_.push_back({key, 9, w.take()});
}
void GgufWriter::add_i32s(const std::string& key, const std::vector<std::int32_t>& v) {
  ByteWriter w;
  w.write(static_cast<std::uint32_t>(GgufType::i32));
  w.write(static_cast<std::uint64_t>(v.size()));
  for (const auto x : v) w.write(x);
  kvs_.push_back({key, 9, w.take()});
}
void GgufWriter::add_value(const std::string& key, const GgufValue& v) {
  ByteWriter w;
  put_value(w, v);
  kvs_.push_back({key, static_cast<std::uint32_t>(v.type), w.take()});
}
void GgufWriter::add_raw(const std::string& key, std::uint32_t type, const std::vector<std::uint8_t>& payload) {
  kvs_.push_back({key, type, payload});
}
bool GgufWriter::has(const std::string& key) const {
  for (const auto& kv : kvs_) {
    if (kv.key == key) return true;
  }
  return false;
}

void GgufWriter::add_tensor(const std::string& name, kernels::TensorType type, std::vector<std::uint64_t> ne,
                            Producer produce) {
  std::uint64_t rows = 1;
  for (std::size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
  const std::uint64_t bytes = kernels::row_bytes(type, ne[0]) * rows;
  tensors_.push_back({name, type, std::move(ne), bytes, std::move(produce)});
}

std::vector<std::uint8_t> GgufWriter::header() const {
  ByteWriter w;
  w.write(kGgufMagic);
  w.write(version_);
  w.write(static_cast<std::uint64_t>(tensors_.size()));
  w.write(static_cast<std::uint64_t>(kvs_.size()));
  for (const auto& kv : kvs_) {
    put_str(w, kv.key);
    w.write(kv.type);
    w.bytes(kv.payload);
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_str(w, t.name);
    w.write(static_cast<std::uint32_t>(t.ne.size()));
    for (const auto n : t.ne) w.write(n);
    w.write(static_cast<std::uint32_t>(t.type));
    w.write(offset);
    offset += (t.bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  auto out = w.take();
  out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, 0);
  return out;
}

std::vector<std::uint8_t> GgufWriter::bytes() const {
  auto out = header();
  std::vector<std::uint8_t> buf;
  for (const auto& t : tensors_) {
    buf.assign(static_cast<std::size_t>(t.bytes), 0);
    t.produce(buf);
    out.insert(out.end(), buf.begin(), buf.end());
    out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, 0);
  }
  return out;
}

Result<void> GgufWriter::write(const std::string& path) const {
  const std::string tmp = path + ".partial";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return make_error(errc::io_error, path + ": cannot create: " + std::strerror(errno));
  auto fail = [&](const char* what) {
    const std::string why = std::strerror(errno);
    std::fclose(f);
    std::remove(tmp.c_str());
    return make_error(errc::io_error, path + ": " + what + ": " + why);
  };
  const auto head = header();
  if (std::fwrite(head.data(), 1, head.size(), f) != head.size()) return fail("write failed");
  std::vector<std::uint8_t> buf;
  for (const auto& t : tensors_) {
    buf.assign(static_cast<std::size_t>(t.bytes), 0);
    t.produce(buf);
    buf.resize(static_cast<std::size_t>((t.bytes + alignment_ - 1) / alignment_ * alignment_), 0);
    if (std::fwrite(buf.data(), 1, buf.size(), f) != buf.size()) return fail("write failed");
  }
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    return make_error(errc::io_error, path + ": write failed: " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return make_error(errc::io_error, path + ": cannot rename into place: " + std::strerror(errno));
  }
  return {};
}

}  // namespace llamawire
