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

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return dim / n_heads * n_kv_heads; }
  int kv_mul() const { return n_heads / n_kv_heads; }
};

}  // namespace llamawire
