// A llama2.c checkpoint, validated and loaded once: read into private memory (float32
// matrices rearranged into the kernels' panel layout), or mapped read-only, or quantized at
// load into one Q8_0 copy (the file is mapped for that one pass, then unmapped). The store
// is immutable after load and shared as `const` by every session.
#pragma once

#include "common/error.hpp"
#include "common/tokenizer.hpp"
#include "common/vocab.hpp"
#include "server/kernels/kernels.hpp"
#include "server/model/gguf.hpp"
#include "server/model/model_config.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <span>
#include <string>
#include <vector>

namespace llamawire {

enum class CheckpointFormat { legacy, v1_f32, v2_q8, gguf };
// gguf: each tensor has its own block type (see WeightStore::type_summary): a GGUF file, or
// a float32 llama2.c file quantized at load to q4_0 or q4_k (those two are load options).
enum class WeightType { f32, q8_0, gguf, q4_0, q4_k };

struct CheckpointHeader {
  ModelConfig config;
  CheckpointFormat format = CheckpointFormat::legacy;
  int group_size = 0;               // v2 only
  std::uint64_t header_bytes = 0;   // where the tensors start
  std::uint64_t expected_bytes = 0; // exact file size the header implies
};

// Parses and validates a header against the file size; the message names `name`. Every
// dimension is range-checked and the implied size computed without overflow.
Result<CheckpointHeader> parse_checkpoint_header(std::span<const std::uint8_t> head,
                                                 std::uint64_t file_bytes, const std::string& name);

// One weight matrix [rows][cols]: float32 (row-major, or in the kernels' panel layout),
// or llama2.c's Q8_0 (int8 + a scale per group), or a GGUF block format (row-major as in
// the file, or packed 16 rows at a time: kernels/packed.hpp).
struct Matrix {
  const float* f32 = nullptr;
  kernels::Q8Matrix q8;
  kernels::BlockMatrix blocks;  // GGUF types other than f32, row-major
  kernels::PackedMatrix packed;  // or packed
  int rows = 0;
  int cols = 0;
  bool panels = false;  // f32 in kernels::pack_panels layout
  bool quantized() const { return q8.q != nullptr; }
  bool block_format() const { return blocks.data != nullptr; }
  bool packed_format() const { return packed.data != nullptr; }
  // The GGUF type of a block-format or packed matrix, f32 otherwise.
  kernels::TensorType block_type() const {
    return packed_format() ? packed.type : block_format() ? blocks.type : kernels::TensorType::f32;
  }
  // Row i as floats, whatever the layout or type.
  void copy_row(int i, float* out) const;
  // Bytes of the whole matrix as stored.
  std::uint64_t stored_bytes() const;
};

struct LayerWeights {
  const float* rms_att = nullptr;  // [dim]
  const float* rms_ffn = nullptr;  // [dim]
  Matrix wq;                       // [dim][dim]
  Matrix wk;                       // [kv_dim][dim]
  Matrix wv;                       // [kv_dim][dim]
  Matrix wo;                       // [dim][dim]
  Matrix w1;                       // [hidden][dim]
  Matrix w2;                       // [dim][hidden]
  Matrix w3;                       // [hidden][dim]
};

class WeightStore {
 public:
  // read: the file is read once into private, read-only memory (huge pages when the kernel
  //       offers them); the running server is immune to the file changing or shrinking.
  //       Float32 matrices are rearranged in place into the kernels' panel layout, which
  //       the batched (many sessions, prompt) forward runs about twice as fast on.
  // mmap: tensors are views into a private read-only mapping of the file (no copy, pages
  //       shared with the page cache); truncating the file under a running server makes
  //       the next access to a lost page fault (SIGBUS): use it only for files nobody edits.
  // With weights = q8_0 and a float32 file, either way the file is mapped only while it is
  // quantized (so truncating it during those seconds of startup would fault too); the
  // running server then holds no reference to it.
  // auto: read (for GGUF files too: packed matrices run the batched products several times
  // faster than ggml's rows; mmap keeps the zero-copy mapping and ggml's layout).
  enum class Load { read, mmap, automatic };
  // A GGUF file read into memory (read, the default) has its Q8_0, Q4_0, Q4_K, Q5_K and Q6_K
  // matrices packed for the kernels (kernels/packed.hpp); mapped, it keeps ggml's rows.
  struct Options {
    // q8_0: quantize f32 llama2.c files at load (llama2.c's Q8_0, a float scale per group);
    // q4_0 / q4_k: to ggml's Q4_0 / Q4_K blocks (Q4_0 where a row is not a multiple of 256,
    // f16 where not of 32), the classifier in Q6_K (or Q8_0, or f16), then packed
    WeightType weights = WeightType::f32;
    int q8_group = 64;                     // group size when quantizing at load
    Load load = Load::automatic;
  };

  static Result<std::shared_ptr<const WeightStore>> load(const std::string& path, Options opts);
  static Result<std::shared_ptr<const WeightStore>> load(const std::string& path) {
    return load(path, Options{});
  }
  ~WeightStore();
  WeightStore(const WeightStore&) = delete;
  WeightStore& operator=(const WeightStore&) = delete;

  const ModelConfig& config() const { return header_.config; }
  const CheckpointHeader& header() const { return header_; }
  WeightType weight_type() const { return type_; }
  int group_size() const { return group_; }
  const std::string& path() const { return path_; }
  // The parsed GGUF file (metadata, vocabulary), or nullptr for llama2.c checkpoints.
  const GgufFile* gguf() const { return gguf_.get(); }
  // "f32", "q8_0", or for GGUF the types with their tensor counts ("q4_K x 20, q6_K x 3, f32 x 7").
  std::string type_summary() const;
  bool mapped() const { return mapped_file_; }

  // Row `token` of the embedding table, as floats (dequantized into `scratch` for Q8_0).
  const float* embedding_row(int token, float* scratch) const;
  const LayerWeights& layer(int l) const { return layers_[static_cast<std::size_t>(l)]; }
  const float* rms_final() const { return rms_final_; }
  // Per rotated pair of a head, the factor its RoPE angle is divided by (GGUF
  // rope_freqs.weight, Llama-3.1 scaling); empty: none.
  const std::vector<float>& rope_freqs() const { return rope_freqs_; }
  const Matrix& classifier() const { return wcls_; }
  const Matrix& embedding() const { return embedding_; }

  // Bytes of weights read per decoded token (for bandwidth figures).
  std::uint64_t bytes_per_token() const;
  // Bytes mapped or allocated for the weights.
  std::uint64_t resident_bytes() const {
    return mapped_bytes_ + owned_.size() + packed_len_ + norms_.size() * sizeof(float);
  }

 private:
  WeightStore() = default;
  Result<void> bind_tensors();
  Result<void> bind_gguf();
  static Result<std::shared_ptr<const WeightStore>> load_gguf(const std::string& path, int fd, std::uint64_t file_bytes,
                                                              Options opts);
  void quantize_all(int group);
  void quantize_blocks(WeightType to);
  void pack_blocks();

  std::string path_;
  CheckpointHeader header_;
  WeightType type_ = WeightType::f32;
  int group_ = 0;
  void pack_all();
  void own_norms();

  const std::uint8_t* map_ = nullptr;  // the file's first byte
  void* map_base_ = nullptr;           // what to munmap
  std::uint64_t map_len_ = 0;
  std::uint64_t mapped_bytes_ = 0;
  std::vector<std::uint8_t> owned_;  // quantized-at-load copy (one, shared)
  void* packed_base_ = nullptr;      // packed matrices (anonymous mapping, filled at load)
  std::uint64_t packed_len_ = 0;
  std::vector<std::uint8_t> blocks_;  // block copies quantized at load (before packing)
  std::vector<float> norms_;         // RMSNorm weights, when the source is unmapped (or not f32)
  std::unique_ptr<GgufFile> gguf_;
  bool mapped_file_ = false;
  Matrix embedding_;                 // [vocab][dim]
  std::vector<LayerWeights> layers_;
  const float* rms_final_ = nullptr;
  std::vector<float> rope_freqs_;
  Matrix wcls_;
};

// The --weights option of the tools: "f32", "q8_0", "q4_0" or "q4_k"; nullopt otherwise.
std::optional<WeightType> parse_weights_option(std::string_view name);
inline constexpr const char* kWeightsHelp = "f32 | q8_0 | q4_0 | q4_k (quantize a float32 llama2.c file at load)";

// The vocabulary of a GGUF file (tokenizer.ggml.*, tokenizer.chat_template), checked: the
// tokenizer model must be "llama" (SentencePiece), the token count `vocab_size`.
Result<Vocab> read_gguf_vocab(const GgufFile& g, int vocab_size);

// The tokenizer of a loaded model: a GGUF file's own vocabulary (then `tokenizer_path` must
// be empty), or for a llama2.c checkpoint `tokenizer_path`, else tokenizer.bin or
// tok<vocab>.bin beside it.
Result<Tokenizer> load_model_tokenizer(const WeightStore& store, const std::string& tokenizer_path);

}  // namespace llamawire
