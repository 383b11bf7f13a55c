#pragma once

#include <cstdint>

namespace llamawire {

// The shape of a Llama-2 model, as read from a checkpoint header.
struct ModelConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;  // always positive here; see shared_classifier
  int seq_len = 0;
  bool shared_classifier = true;  // false: a separate wcls follows the other tensors
  // llama2.c's fixed values; a GGUF file gives its own.
  float rope_base = 10000.0f;  // RoPE theta
  float rms_eps = 1e-5f;       // RMSNorm epsilon
  int rope_dims = 0;           // dimensions of each head that RoPE rotates (0: all)

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return dim / n_heads * n_kv_heads; }
  int kv_mul() const { return n_heads / n_kv_heads; }
  int rotary_dims() const { return rope_dims > 0 ? rope_dims : head_size(); }
};

}  // namespace llamawire
