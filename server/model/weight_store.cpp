#include "server/model/weight_store.hpp"

#include "common/bytes.hpp"
#include "common/log.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <algorithm>
#include <cstring>

namespace llamawire {
namespace {

constexpr std::uint32_t kMagic = 0x616b3432;  // "ak42"
constexpr std::uint64_t kExportHeaderBytes = 256;
constexpr std::uint64_t kLegacyHeaderBytes = 7 * 4;

struct Limit {
  const char* name;
  long long max;
};
constexpr Limit kDim{"dim", 1 << 16};
constexpr Limit kHidden{"hidden_dim", 1 << 18};
constexpr Limit kLayers{"n_layers", 1024};
constexpr Limit kHeads{"n_heads", 1024};
constexpr Limit kKvHeads{"n_kv_heads", 1024};
constexpr Limit kVocab{"vocab_size", 1 << 22};
constexpr Limit kSeqLen{"seq_len", 1 << 20};

Error bad(const std::string& name, const std::string& what) {
  return make_error(errc::bad_checkpoint, name + ": " + what);
}

// a * b with overflow detection; the dimension limits make overflow impossible, but the
// sizes of an untrusted header are computed defensively anyway.
bool mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
bool add(std::uint64_t a, std::uint64_t b, std::uint64_t& out) { return !__builtin_add_overflow(a, b, &out); }

// Layout of the tensors after the header: sizes in elements, in file order.
struct TensorSizes {
  std::uint64_t emb, rms_layer, wq, wkv, wo, w13, w2, rms_final, freq, wcls;
};

TensorSizes tensor_sizes(const ModelConfig& c) {
  const std::uint64_t D = static_cast<std::uint64_t>(c.dim);
  const std::uint64_t H = static_cast<std::uint64_t>(c.hidden_dim);
  const std::uint64_t KV = static_cast<std::uint64_t>(c.kv_dim());
  const std::uint64_t V = static_cast<std::uint64_t>(c.vocab_size);
  const std::uint64_t T = static_cast<std::uint64_t>(c.seq_len);
  const std::uint64_t HS = static_cast<std::uint64_t>(c.head_size());
  // Per layer sizes (the bounds above keep each product far below 2^63).
  return TensorSizes{V * D, D, D * D, KV * D, D * D, H * D, D * H, D, T * HS / 2, V * D};
}

}  // namespace

Result<CheckpointHeader> parse_checkpoint_header(std::span<const std::uint8_t> head,
                                                 std::uint64_t file_bytes, const std::string& name) {
  ByteReader r(head);
  CheckpointHeader h;
  const auto first = r.read<std::uint32_t>();
  if (!first) return bad(name, "file too short for a checkpoint header (" + std::to_string(file_bytes) + " bytes)");
  std::int32_t version = 0;
  if (*first == kMagic) {
    const auto v = r.read<std::int32_t>();
    if (!v) return bad(name, "truncated export header");
    version = *v;
    if (version != 1 && version != 2) {
      return bad(name, "unsupported export version " + std::to_string(version) + " (1 and 2 are supported)");
    }
    h.format = version == 1 ? CheckpointFormat::v1_f32 : CheckpointFormat::v2_q8;
    h.header_bytes = kExportHeaderBytes;
    if (file_bytes < kExportHeaderBytes) {
      return bad(name, "file too short for a 256-byte export header (" + std::to_string(file_bytes) + " bytes)");
    }
  } else {
    r = ByteReader(head);
    h.format = CheckpointFormat::legacy;
    h.header_bytes = kLegacyHeaderBytes;
  }
  std::int32_t f[7];
  for (auto& v : f) {
    const auto x = r.read<std::int32_t>();
    if (!x) return bad(name, "file too short for a checkpoint header (" + std::to_string(file_bytes) + " bytes)");
    v = *x;
  }
  ModelConfig& c = h.config;
  c.dim = f[0];
  c.hidden_dim = f[1];
  c.n_layers = f[2];
  c.n_heads = f[3];
  c.n_kv_heads = f[4];
  c.seq_len = f[6];
  if (h.format == CheckpointFormat::legacy) {
    // A negative vocab_size means "separate classifier"; INT32_MIN has no positive twin.
    if (f[5] == INT32_MIN) return bad(name, "vocab_size " + std::to_string(f[5]) + " out of range");
    c.shared_classifier = f[5] > 0;
    c.vocab_size = f[5] < 0 ? -f[5] : f[5];
  } else {
    c.vocab_size = f[5];
    const auto shared = r.read<std::uint8_t>();
    if (!shared) return bad(name, "truncated export header");
    if (*shared > 1) return bad(name, "shared_classifier flag is " + std::to_string(*shared) + ", expected 0 or 1");
    c.shared_classifier = *shared == 1;
    if (version == 2) {
      const auto gs = r.read<std::int32_t>();
      if (!gs) return bad(name, "truncated export header");
      h.group_size = *gs;
    }
  }
  const std::pair<Limit, int> checks[] = {{kDim, c.dim},         {kHidden, c.hidden_dim},
                                          {kLayers, c.n_layers}, {kHeads, c.n_heads},
                                          {kKvHeads, c.n_kv_heads}, {kVocab, c.vocab_size},
                                          {kSeqLen, c.seq_len}};
  for (const auto& [limit, value] : checks) {
    if (value <= 0 || value > limit.max) {
      return bad(name, std::string(limit.name) + " = " + std::to_string(value) + " out of range [1, " +
                           std::to_string(limit.max) + "]");
    }
  }
  if (c.dim % c.n_heads != 0) {
    return bad(name, "dim " + std::to_string(c.dim) + " is not a multiple of n_heads " + std::to_string(c.n_heads));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return bad(name, "n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                         std::to_string(c.n_kv_heads));
  }
  if (c.head_size() % 2 != 0) {
    return bad(name, "head size " + std::to_string(c.head_size()) + " is odd; RoPE needs an even head size");
  }
  if (h.format == CheckpointFormat::v2_q8) {
    const int gs = h.group_size;
    if (gs <= 0 || gs > 4096 || c.dim % gs != 0 || c.hidden_dim % gs != 0) {
      return bad(name, "group_size " + std::to_string(gs) + " must be positive and divide dim " +
                           std::to_string(c.dim) + " and hidden_dim " + std::to_string(c.hidden_dim));
    }
    if (gs % 4 != 0) return bad(name, "group_size " + std::to_string(gs) + " is not a multiple of 4 (unsupported)");
  }

  // Implied file size, checked arithmetic.
  const TensorSizes s = tensor_sizes(c);
  const std::uint64_t L = static_cast<std::uint64_t>(c.n_layers);
  std::uint64_t total = h.header_bytes;
  bool ok = true;
  auto add_f32 = [&](std::uint64_t n_elems, std::uint64_t times) {
    std::uint64_t bytes = 0;
    ok = ok && mul(n_elems, times, bytes) && mul(bytes, 4, bytes) && add(total, bytes, total);
  };
  auto add_q8 = [&](std::uint64_t n_elems, std::uint64_t times) {
    const std::uint64_t per = n_elems + n_elems / static_cast<std::uint64_t>(h.group_size) * 4;
    std::uint64_t bytes = 0;
    ok = ok && mul(per, times, bytes) && add(total, bytes, total);
  };
  switch (h.format) {
    case CheckpointFormat::legacy:
      add_f32(s.emb, 1);
      add_f32(s.rms_layer, L);
      add_f32(s.wq, L);
      add_f32(s.wkv, 2 * L);
      add_f32(s.wo, L);
      add_f32(s.rms_layer, L);
      add_f32(s.w13, L);
      add_f32(s.w2, L);
      add_f32(s.w13, L);
      add_f32(s.rms_final, 1);
      add_f32(s.freq, 2);
      if (!c.shared_classifier) add_f32(s.wcls, 1);
      break;
    case CheckpointFormat::v1_f32:
      add_f32(s.rms_layer, 2 * L);
      add_f32(s.rms_final, 1);
      add_f32(s.emb, 1);
      add_f32(s.wq, L);
      add_f32(s.wkv, 2 * L);
      add_f32(s.wo, L);
      add_f32(s.w13, L);
      add_f32(s.w2, L);
      add_f32(s.w13, L);
      if (!c.shared_classifier) add_f32(s.wcls, 1);
      break;
    case CheckpointFormat::v2_q8:
      add_f32(s.rms_layer, 2 * L);
      add_f32(s.rms_final, 1);
      add_q8(s.emb, 1);
      add_q8(s.wq, L);
      add_q8(s.wkv, 2 * L);
      add_q8(s.wo, L);
      add_q8(s.w13, L);
      add_q8(s.w2, L);
      add_q8(s.w13, L);
      if (!c.shared_classifier) add_q8(s.wcls, 1);
      break;
    case CheckpointFormat::gguf: break;  // not a llama2.c header
  }
  if (!ok) return bad(name, "header implies a size that overflows 64 bits");
  h.expected_bytes = total;
  if (file_bytes < total) {
    return bad(name, "truncated: the header implies " + std::to_string(total) + " bytes but the file has " +
                         std::to_string(file_bytes) + " (" + std::to_string(total - file_bytes) + " bytes missing)");
  }
  if (file_bytes > total) {
    return bad(name, "the header implies " + std::to_string(total) + " bytes but the file has " +
                         std::to_string(file_bytes) + " (" + std::to_string(file_bytes - total) +
                         " extra bytes): wrong header or not a llama2.c checkpoint");
  }
  return h;
}

std::optional<WeightType> parse_weights_option(std::string_view name) {
  if (name == "f32") return WeightType::f32;
  if (name == "q8_0") return WeightType::q8_0;
  if (name == "q4_0") return WeightType::q4_0;
  if (name == "q4_k") return WeightType::q4_k;
  return std::nullopt;
}

WeightStore::~WeightStore() {
  if (map_base_ != nullptr) ::munmap(map_base_, map_len_);
  if (packed_base_ != nullptr) ::munmap(packed_base_, packed_len_);
}

Result<std::shared_ptr<const WeightStore>> WeightStore::load(const std::string& path, Options opts) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return bad(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return bad(path, "not a regular file (a FIFO, device or folder cannot be a checkpoint)");
  }
  const auto file_bytes = static_cast<std::uint64_t>(st.st_size);
  std::uint8_t head[kExportHeaderBytes] = {};
  const ssize_t got = ::pread(fd, head, sizeof head, 0);
  if (got < 0) {
    ::close(fd);
    return bad(path, std::string("read error: ") + std::strerror(errno));
  }
  if (is_gguf(std::span(head, static_cast<std::size_t>(got)))) {
    auto g = load_gguf(path, fd, file_bytes, opts);
    ::close(fd);
    return g;
  }
  if (opts.load == Load::automatic) opts.load = Load::read;
  auto header = parse_checkpoint_header(std::span(head, static_cast<std::size_t>(got)), file_bytes, path);
  if (!header) {
    ::close(fd);
    return header.error();
  }
  void* map = MAP_FAILED;
  std::uint64_t map_len = file_bytes;
  std::uint64_t shift = 0;
  // Quantizing at load reads the float32 file once and keeps only the Q8_0 copy (plus the
  // small norm vectors): the file is mapped for that pass and unmapped after it, so the
  // load's peak is the Q8_0 copy plus one tensor, not the whole float32 file as well.
  const bool to_blocks = opts.weights == WeightType::q4_0 || opts.weights == WeightType::q4_k;
  if (to_blocks && header->format == CheckpointFormat::v2_q8) {
    ::close(fd);
    return bad(path, "--weights q4_0 and q4_k quantize a float32 checkpoint; this one is already Q8_0");
  }
  const bool quantize = (opts.weights == WeightType::q8_0 && header->format != CheckpointFormat::v2_q8) || to_blocks;
  if (opts.load == Load::mmap || quantize) {
    map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      ::close(fd);
      return bad(path, std::string("mmap failed: ") + std::strerror(errno));
    }
  } else {
    // One private copy, read-only once filled: later changes to the file cannot reach it.
    // The file lands `shift` bytes in, so that the tensors after the header start on a
    // cache line (aligned loads in the matmul kernels).
    shift = (64 - header->header_bytes % 64) % 64;
    map_len = file_bytes + shift;
    map = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
      ::close(fd);
      return bad(path, "cannot allocate " + std::to_string(file_bytes) + " bytes for the weights");
    }
    ::madvise(map, map_len, MADV_HUGEPAGE);
    std::uint64_t done = 0;
    auto* dst = static_cast<std::uint8_t*>(map) + shift;
    while (done < file_bytes) {
      const ssize_t n = ::pread(fd, dst + done, static_cast<std::size_t>(std::min<std::uint64_t>(file_bytes - done, 1u << 30)),
                                static_cast<off_t>(done));
      if (n <= 0) {
        const std::string why = n < 0 ? std::strerror(errno) : "the file shrank while being read";
        ::munmap(map, map_len);
        ::close(fd);
        return bad(path, "read error: " + why);
      }
      done += static_cast<std::uint64_t>(n);
    }
  }
  ::close(fd);

  std::shared_ptr<WeightStore> store(new WeightStore());
  store->path_ = path;
  store->header_ = *header;
  store->map_base_ = map;
  store->map_len_ = map_len;
  store->map_ = static_cast<const std::uint8_t*>(map) + shift;
  store->mapped_bytes_ = file_bytes;
  store->type_ = header->format == CheckpointFormat::v2_q8 ? WeightType::q8_0 : WeightType::f32;
  store->group_ = header->group_size;
  if (auto r = store->bind_tensors(); !r) return r.error();
  if (opts.weights == WeightType::q8_0 && store->type_ == WeightType::f32) {
    int gs = opts.q8_group;
    const ModelConfig& c = store->config();
    while (gs > 4 && (c.dim % gs != 0 || c.hidden_dim % gs != 0)) gs /= 2;
    if (gs < 4 || c.dim % gs != 0 || c.hidden_dim % gs != 0) {
      return bad(path, "cannot quantize: dim " + std::to_string(c.dim) + " and hidden_dim " +
                           std::to_string(c.hidden_dim) + " have no common group size >= 4");
    }
    store->quantize_all(gs);
    store->own_norms();
    ::munmap(store->map_base_, store->map_len_);
    store->map_base_ = nullptr;
    store->map_ = nullptr;
    store->mapped_bytes_ = 0;
  } else if (to_blocks) {
    store->quantize_blocks(opts.weights);
    store->pack_blocks();
    store->own_norms();
    ::munmap(store->map_base_, store->map_len_);
    store->map_base_ = nullptr;
    store->map_ = nullptr;
    store->mapped_bytes_ = 0;
  } else if (opts.load == Load::read && store->type_ == WeightType::f32) {
    store->pack_all();
  }
  if (opts.load == Load::read && !quantize) ::mprotect(map, map_len, PROT_READ);
  return std::shared_ptr<const WeightStore>(std::move(store));
}

Result<void> WeightStore::bind_tensors() {
  const ModelConfig& c = header_.config;
  const TensorSizes s = tensor_sizes(c);
  const int D = c.dim, H = c.hidden_dim, KV = c.kv_dim(), V = c.vocab_size;
  const auto L = static_cast<std::size_t>(c.n_layers);
  std::uint64_t off = header_.header_bytes;
  auto f32 = [&](std::uint64_t n) {
    const auto* p = reinterpret_cast<const float*>(map_ + off);
    off += n * 4;
    return p;
  };
  auto q8 = [&](std::uint64_t n, int rows, int cols) {
    Matrix m;
    m.rows = rows;
    m.cols = cols;
    m.q8.q = reinterpret_cast<const std::int8_t*>(map_ + off);
    off += n;
    m.q8.s = reinterpret_cast<const float*>(map_ + off);
    off += n / static_cast<std::uint64_t>(group_) * 4;
    m.q8.group = group_;
    return m;
  };
  auto fm = [&](std::uint64_t n, int rows, int cols) {
    Matrix m;
    m.rows = rows;
    m.cols = cols;
    m.f32 = f32(n);
    return m;
  };
  layers_.assign(L, LayerWeights{});
  switch (header_.format) {
    case CheckpointFormat::legacy: {
      embedding_ = fm(s.emb, V, D);
      for (auto& l : layers_) l.rms_att = f32(s.rms_layer);
      for (auto& l : layers_) l.wq = fm(s.wq, D, D);
      for (auto& l : layers_) l.wk = fm(s.wkv, KV, D);
      for (auto& l : layers_) l.wv = fm(s.wkv, KV, D);
      for (auto& l : layers_) l.wo = fm(s.wo, D, D);
      for (auto& l : layers_) l.rms_ffn = f32(s.rms_layer);
      for (auto& l : layers_) l.w1 = fm(s.w13, H, D);
      for (auto& l : layers_) l.w2 = fm(s.w2, D, H);
      for (auto& l : layers_) l.w3 = fm(s.w13, H, D);
      rms_final_ = f32(s.rms_final);
      off += 2 * s.freq * 4;  // freq_cis tables: RoPE is computed
      wcls_ = c.shared_classifier ? embedding_ : fm(s.wcls, V, D);
      break;
    }
    case CheckpointFormat::v1_f32:
    case CheckpointFormat::v2_q8: {
      const bool q = header_.format == CheckpointFormat::v2_q8;
      auto mat = [&](std::uint64_t n, int rows, int cols) { return q ? q8(n, rows, cols) : fm(n, rows, cols); };
      for (auto& l : layers_) l.rms_att = f32(s.rms_layer);
      for (auto& l : layers_) l.rms_ffn = f32(s.rms_layer);
      rms_final_ = f32(s.rms_final);
      embedding_ = mat(s.emb, V, D);
      for (auto& l : layers_) l.wq = mat(s.wq, D, D);
      for (auto& l : layers_) l.wk = mat(s.wkv, KV, D);
      for (auto& l : layers_) l.wv = mat(s.wkv, KV, D);
      for (auto& l : layers_) l.wo = mat(s.wo, D, D);
      for (auto& l : layers_) l.w1 = mat(s.w13, H, D);
      for (auto& l : layers_) l.w2 = mat(s.w2, D, H);
      for (auto& l : layers_) l.w3 = mat(s.w13, H, D);
      wcls_ = c.shared_classifier ? embedding_ : mat(s.wcls, V, D);
      break;
    }
    case CheckpointFormat::gguf: return bad(path_, "internal: a GGUF file in the llama2.c binder");
  }
  LW_ASSERT(off == header_.expected_bytes);
  return {};
}

void WeightStore::quantize_all(int group) {
  // One owned buffer holding every quantized matrix (values then scales, 64-byte aligned).
  const ModelConfig& c = config();
  std::vector<Matrix*> mats;
  mats.push_back(&embedding_);
  for (auto& l : layers_) {
    for (Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) mats.push_back(m);
  }
  if (!c.shared_classifier) mats.push_back(&wcls_);
  auto align = [](std::size_t x) { return (x + 63) & ~std::size_t{63}; };
  std::size_t total = 64;
  for (const Matrix* m : mats) {
    const auto n = static_cast<std::size_t>(m->rows) * static_cast<std::size_t>(m->cols);
    total += align(n) + align(n / static_cast<std::size_t>(group) * 4);
  }
  owned_.assign(total, 0);
  std::size_t off = align(reinterpret_cast<std::uintptr_t>(owned_.data())) - reinterpret_cast<std::uintptr_t>(owned_.data());
  for (Matrix* m : mats) {
    const auto n = static_cast<std::size_t>(m->rows) * static_cast<std::size_t>(m->cols);
    auto* q = reinterpret_cast<std::int8_t*>(owned_.data() + off);
    off += align(n);
    auto* s = reinterpret_cast<float*>(owned_.data() + off);
    off += align(n / static_cast<std::size_t>(group) * 4);
    // Weights round half to even (as llama2.c's export does with torch.round).
    for (std::size_t g = 0; g < n / static_cast<std::size_t>(group); ++g) {
      const float* x = m->f32 + g * static_cast<std::size_t>(group);
      float wmax = 0.0f;
      for (int k = 0; k < group; ++k) wmax = std::fmax(wmax, std::fabs(x[k]));
      const float scale = wmax / 127.0f;
      s[g] = scale;
      for (int k = 0; k < group; ++k) {
        q[g * static_cast<std::size_t>(group) + static_cast<std::size_t>(k)] =
            static_cast<std::int8_t>(scale != 0.0f ? std::nearbyint(x[k] / scale) : 0.0f);
      }
    }
    // Drop this tensor's f32 pages now, so the load's peak is the Q8_0 copy plus one tensor.
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto lo = (reinterpret_cast<std::uintptr_t>(m->f32) + page - 1) & ~(page - 1);
    const auto hi = reinterpret_cast<std::uintptr_t>(m->f32 + n) & ~(page - 1);
    if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    m->f32 = nullptr;
    m->q8 = kernels::Q8Matrix{q, s, group};
  }
  if (c.shared_classifier) wcls_ = embedding_;
  type_ = WeightType::q8_0;
  group_ = group;
}

void WeightStore::quantize_blocks(WeightType to) {
  // Each float32 matrix into ggml blocks (one buffer), its f32 pages dropped as it goes; the
  // blocks are packed right after (pack_blocks), and this buffer then freed.
  using kernels::TensorType;
  const ModelConfig& c = config();
  // Rows that are no multiple of 32 values stay in f16 (as llama-quantize falls back).
  auto type_for = [&](const Matrix& m, bool classifier) {
    const bool k_ok = m.cols % 256 == 0, ok32 = m.cols % 32 == 0;
    if (classifier) return k_ok ? TensorType::q6_k : ok32 ? TensorType::q8_0 : TensorType::f16;
    return to == WeightType::q4_k && k_ok ? TensorType::q4_k : ok32 ? TensorType::q4_0 : TensorType::f16;
  };
  struct Job {
    Matrix* m;
    TensorType t;
    std::size_t offset;
  };
  std::vector<Job> jobs;
  std::size_t total = 0;
  auto add = [&](Matrix& m, bool classifier) {
    const TensorType t = type_for(m, classifier);
    jobs.push_back({&m, t, total});
    total += kernels::row_bytes(t, static_cast<std::size_t>(m.cols)) * static_cast<std::size_t>(m.rows);
  };
  for (auto& l : layers_) {
    for (Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) add(*m, false);
  }
  add(wcls_, true);
  if (!c.shared_classifier) add(embedding_, true);  // looked up only: the classifier's type
  blocks_.assign(total, 0);
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  for (const Job& j : jobs) {
    Matrix& m = *j.m;
    const std::size_t rb = kernels::row_bytes(j.t, static_cast<std::size_t>(m.cols));
    for (int i = 0; i < m.rows; ++i) {
      kernels::quantize_row(j.t, m.f32 + static_cast<std::size_t>(i) * static_cast<std::size_t>(m.cols),
                            blocks_.data() + j.offset + rb * static_cast<std::size_t>(i), static_cast<std::size_t>(m.cols));
    }
    const std::size_t n = static_cast<std::size_t>(m.rows) * static_cast<std::size_t>(m.cols);
    const auto lo = (reinterpret_cast<std::uintptr_t>(m.f32) + page - 1) & ~(page - 1);
    const auto hi = reinterpret_cast<std::uintptr_t>(m.f32 + n) & ~(page - 1);
    if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    m.f32 = nullptr;
    m.blocks = kernels::BlockMatrix{j.t, blocks_.data() + j.offset, rb};
  }
  if (c.shared_classifier) embedding_ = wcls_;
  type_ = WeightType::gguf;
}

void WeightStore::pack_blocks() {
  // Every packable matrix into one anonymous mapping, touched only as it is written; the
  // source rows' pages (of the private read copy) are released tensor by tensor, so the
  // load's peak stays near one copy of the weights.
  std::vector<Matrix*> mats;
  for (auto& l : layers_) {
    for (Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) mats.push_back(m);
  }
  const bool tied = embedding_.block_format() && embedding_.blocks.data == wcls_.blocks.data;
  mats.push_back(&wcls_);
  auto eligible = [](const Matrix& m) {
    return m.block_format() && kernels::packable(m.blocks.type) && m.rows % kernels::kTileRows == 0 &&
           m.cols % kernels::packed_block(m.blocks.type) == 0;
  };
  auto bytes_of = [](const Matrix& m) {
    const kernels::PackedMatrix shape{m.blocks.type, nullptr, m.cols, m.rows};
    return (shape.group_bytes() * static_cast<std::size_t>(m.rows / kernels::kTileRows) + 63) & ~std::size_t{63};
  };
  std::size_t total = 0;
  for (const Matrix* m : mats) {
    if (eligible(*m)) total += bytes_of(*m);
  }
  if (total == 0) return;
  void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return;  // no memory for a second layout: ggml's rows still work
  ::madvise(base, total, MADV_HUGEPAGE);
  packed_base_ = base;
  packed_len_ = total;
  auto* dst = static_cast<std::uint8_t*>(base);
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto* own_lo = static_cast<const std::uint8_t*>(map_base_);
  const bool release = !mapped_file_ && map_base_ != nullptr;
  for (Matrix* m : mats) {
    if (!eligible(*m)) continue;
    kernels::PackedMatrix p{m->blocks.type, dst, m->cols, m->rows};
    const std::size_t gb = p.group_bytes();
    for (int g = 0; g < m->rows / kernels::kTileRows; ++g) {
      kernels::pack_group(m->blocks.type, m->blocks.data + static_cast<std::size_t>(g) * kernels::kTileRows * m->blocks.row_bytes,
                          m->blocks.row_bytes, m->cols, dst + static_cast<std::size_t>(g) * gb);
    }
    const std::uint8_t* src = m->blocks.data;
    const std::size_t src_len = m->blocks.row_bytes * static_cast<std::size_t>(m->rows);
    if (release && src >= own_lo && src + src_len <= own_lo + map_len_) {
      const auto lo = (reinterpret_cast<std::uintptr_t>(src) + page - 1) & ~(page - 1);
      const auto hi = reinterpret_cast<std::uintptr_t>(src + src_len) & ~(page - 1);
      if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    }
    dst += bytes_of(*m);
    m->blocks = kernels::BlockMatrix{};
    m->packed = p;
  }
  if (tied) embedding_ = wcls_;
  // The copy quantized at load goes once nothing reads it (rows that were not packed do).
  bool still_used = false;
  for (const Matrix* m : mats) still_used = still_used || m->block_format();
  still_used = still_used || embedding_.block_format();
  if (!still_used) {
    blocks_.clear();
    blocks_.shrink_to_fit();
  }
  ::mprotect(base, total, PROT_READ);
}

void WeightStore::own_norms() {
  // The RMSNorm weights, copied out of the source so it can be unmapped.
  const auto D = static_cast<std::size_t>(config().dim);
  norms_.resize((2 * layers_.size() + 1) * D);
  float* p = norms_.data();
  auto take = [&](const float*& v) {
    std::copy_n(v, D, p);
    v = p;
    p += D;
  };
  for (auto& l : layers_) {
    take(l.rms_att);
    take(l.rms_ffn);
  }
  take(rms_final_);
}

void WeightStore::pack_all() {
  // Only the private copy is writable; the matrices are rewritten in place, one panel at a
  // time. The embedding is packed only when it is also the classifier (lookups then read
  // one strided row per token, which is cheap).
  const ModelConfig& c = config();
  std::vector<float> scratch(static_cast<std::size_t>(kernels::kPanelRows) *
                             static_cast<std::size_t>(std::max(c.dim, c.hidden_dim)));
  auto pack = [&](Matrix& m) {
    if (m.f32 == nullptr || m.panels) return;  // GGUF block formats stay as they are
    kernels::pack_panels(const_cast<float*>(m.f32), m.cols, m.rows, scratch.data());
    m.panels = true;
  };
  for (auto& l : layers_) {
    for (Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) pack(*m);
  }
  pack(wcls_);
  if (c.shared_classifier) embedding_ = wcls_;
}

void Matrix::copy_row(int i, float* out) const {
  LW_ASSERT(i >= 0 && i < rows);
  if (packed_format()) {
    kernels::packed_row(packed, i, out);
    return;
  }
  if (block_format()) {
    kernels::dequantize_row(blocks.type, blocks.data + static_cast<std::size_t>(i) * blocks.row_bytes, out,
                            static_cast<std::size_t>(cols));
    return;
  }
  if (quantized()) {
    const auto n = static_cast<std::size_t>(cols);
    const int gs = q8.group;
    const std::int8_t* q = q8.q + static_cast<std::size_t>(i) * n;
    const float* s = q8.s + static_cast<std::size_t>(i) * (n / static_cast<std::size_t>(gs));
    for (std::size_t j = 0; j < n; ++j) out[j] = static_cast<float>(q[j]) * s[j / static_cast<std::size_t>(gs)];
    return;
  }
  LW_ASSERT(f32 != nullptr);
  if (panels) {
    kernels::panel_row(f32, cols, rows, i, out);
  } else {
    std::copy_n(f32 + static_cast<std::size_t>(i) * static_cast<std::size_t>(cols), cols, out);
  }
}

const float* WeightStore::embedding_row(int token, float* scratch) const {
  if (embedding_.f32 != nullptr && !embedding_.panels) {
    return embedding_.f32 + static_cast<std::size_t>(token) * static_cast<std::size_t>(config().dim);
  }
  embedding_.copy_row(token, scratch);
  return scratch;
}

std::uint64_t Matrix::stored_bytes() const {
  const auto n = static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols);
  if (packed_format()) return packed.group_bytes() * static_cast<std::uint64_t>(rows / kernels::kTileRows);
  if (block_format()) return blocks.row_bytes * static_cast<std::uint64_t>(rows);
  return quantized() ? n + n / static_cast<std::uint64_t>(q8.group) * 4 : n * 4;
}

std::uint64_t WeightStore::bytes_per_token() const {
  std::uint64_t total = 0;
  for (const auto& l : layers_) {
    for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) total += m->stored_bytes();
  }
  return total + wcls_.stored_bytes();
}

}  // namespace llamawire
