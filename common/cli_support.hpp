// Small helpers shared by the command-line programs.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llamawire {

// Tokenizer files to try for a checkpoint when -z is not given: tokenizer.bin beside the
// checkpoint, then tok<vocab>.bin beside it (the llama2.c naming of custom tokenizers).
std::vector<std::string> default_tokenizer_paths(const std::string& checkpoint, int vocab_size);

// Steps as llama2.c's run: 0 or more than seq_len means seq_len.
inline int clamp_steps(int steps, int seq_len) { return steps <= 0 || steps > seq_len ? seq_len : steps; }

// Range checks of numeric options, each message naming the option, its range and the value
// given. Integer options are parsed into signed 64-bit variables first, so "-1" is refused
// instead of wrapping to 4 GiB; real ones must be finite ("nan", "inf" and "1e20 seconds"
// are refused). The first failure is kept.
class OptionChecks {
 public:
  void integer(std::string_view option, long long value, long long lo, long long hi);
  // A finite number in [lo, hi]; `what` names the unit in the message ("seconds").
  void real(std::string_view option, double value, double lo, double hi, std::string_view what = "a number");
  // A duration in seconds: finite, in [lo, hi].
  void seconds(std::string_view option, double value, double lo, double hi) { real(option, value, lo, hi, "seconds"); }
  const std::optional<std::string>& error() const { return error_; }

 private:
  std::optional<std::string> error_;
};

// The largest value any duration option takes (about 11.6 days): far beyond any sane
// timeout, and small enough for every clock's arithmetic.
inline constexpr double kMaxOptionSeconds = 1e6;

}  // namespace llamawire
