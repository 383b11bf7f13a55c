// Small helpers shared by the command-line programs.
#pragma once

#include <string>
#include <vector>

namespace llamawire {

// Tokenizer files to try for a checkpoint when -z is not given: tokenizer.bin beside the
// checkpoint, then tok<vocab>.bin beside it (the llama2.c naming of custom tokenizers).
std::vector<std::string> default_tokenizer_paths(const std::string& checkpoint, int vocab_size);

// Steps as llama2.c's run: 0 or more than seq_len means seq_len.
inline int clamp_steps(int steps, int seq_len) { return steps <= 0 || steps > seq_len ? seq_len : steps; }

}  // namespace llamawire
