// Typed protocol messages <-> payload bytes (proto-spec/PROTOCOL.md, version 1.5).
#pragma once

#include "common/error.hpp"
#include "common/frame.hpp"
#include "common/vocab.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace llamawire {

enum class MsgType : std::uint8_t {
  hello = 0x01,
  get_tokenizer = 0x02,
  forward = 0x03,
  generate = 0x04,
  reset = 0x05,
  cancel = 0x06,
  ping = 0x07,
  stats = 0x08,
  get_vocab = 0x09,  // 1.2
  hello_ok = 0x81,
  tokenizer = 0x82,
  logits = 0x83,
  token = 0x84,
  end = 0x85,
  ok = 0x86,
  pong = 0x87,
  stats_reply = 0x88,
  vocab = 0x89,  // 1.2
  token_logprobs = 0x8A,  // 1.5
  error = 0xFF,
};

enum class StopReason : std::uint8_t {
  steps = 0, bos = 1, eos = 2, context = 3, cancelled = 4, shutdown = 5,
  grammar = 6,  // 1.5: the output is complete in the request's grammar
};
std::string_view stop_reason_name(StopReason r);

inline constexpr std::uint32_t kGenerateStopOnEos = 1u << 0;
inline constexpr std::uint32_t kGenerateSampling = 1u << 1;  // 1.5: the sampling extension follows the tokens

namespace msg {

struct Hello {
  std::uint16_t major = kProtocolMajor;
  std::uint16_t minor = kProtocolMinor;
  std::string api_key;
  std::string client_name;
};
struct GetTokenizer {};
struct Forward {
  std::uint32_t start_pos = 0;
  std::vector<std::uint32_t> tokens;
};
// GENERATE's sampling extension (1.5, flags bit 1): the samplers beyond llama2.c's, a
// grammar and log-probabilities. The defaults change nothing.
struct SamplingExt {
  std::uint32_t top_k = 0;           // 0: off
  float min_p = 0.0f;                // [0, 1]; 0: off
  float repeat_penalty = 1.0f;       // (0, 10]; 1: off
  std::int32_t repeat_last_n = 64;   // the penalties' window; -1: all, 0: none
  float presence_penalty = 0.0f;     // [-2, 2]
  float frequency_penalty = 0.0f;    // [-2, 2]
  std::vector<std::pair<std::uint32_t, float>> logit_bias;  // (token, bias in [-100, 100])
  std::string grammar;               // GBNF; empty: none
  std::uint8_t logprobs = 0;         // 0: none; n >= 1: TOKEN_LOGPROBS with n - 1 alternatives (n <= 21)
};
struct Generate {
  std::uint32_t start_pos = 0;
  std::uint32_t limit_pos = 0;
  float temperature = 1.0f;
  float topp = 0.9f;
  std::uint64_t seed = 0;
  std::uint32_t flags = 0;
  std::vector<std::uint32_t> tokens;
  SamplingExt ext;  // on the wire only with flags & kGenerateSampling
};
struct Reset {
  std::uint32_t position = 0;
};
struct Cancel {};
struct Ping {
  std::uint64_t nonce = 0;
};
struct Stats {};
struct GetVocab {};

struct HelloOk {
  std::uint16_t major = kProtocolMajor;
  std::uint16_t minor = kProtocolMinor;
  std::uint32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  std::uint32_t context = 0;
  std::uint32_t max_frame_bytes = 0;
  std::uint32_t tokenizer_bytes = 0;
  std::uint8_t weights = 0;  // 0 f32, 1 q8_0, 2 per-tensor (GGUF) types
  std::string model_name;
};
struct Tokenizer {
  std::vector<std::uint8_t> bytes;
};
struct Logits {
  std::uint32_t pos = 0;
  std::vector<float> values;
};
struct Token {
  std::uint32_t token = 0;
};
// TOKEN with its log-probability and the most likely alternatives (1.5).
struct TokenLogprobs {
  std::uint32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<std::uint32_t, float>> top;
};
struct End {
  StopReason reason = StopReason::steps;
  std::uint32_t prompt_tokens = 0;
  std::uint32_t generated_tokens = 0;
  std::uint32_t position = 0;
  std::uint32_t last_token = 0;
};
struct Ok {
  std::uint32_t position = 0;
};
struct Pong {
  std::uint64_t nonce = 0;
};
struct StatsReply {
  std::string json;
};
// The model's whole vocabulary and the chat template's name (1.2).
struct Vocab {
  llamawire::Vocab vocab;  // chat_template (the Jinja text) is not sent
  std::string chat_template;  // a name: llama2, mistral, zephyr, chatml, vicuna, llama3
  // 1.3: the trailer (end ids, pre-tokenizer, merges) follows the tokens. A server sends it
  // to clients of 1.3 and later only; a decoder reads it when present.
  bool extended = true;
};
struct Error {
  std::uint16_t code = 0;
  std::uint8_t fatal = 0;
  std::string message;
};

}  // namespace msg

using Message = std::variant<msg::Hello, msg::GetTokenizer, msg::Forward, msg::Generate, msg::Reset, msg::Cancel,
                             msg::Ping, msg::Stats, msg::HelloOk, msg::Tokenizer, msg::Logits, msg::Token, msg::End,
                             msg::Ok, msg::Pong, msg::StatsReply, msg::Error, msg::GetVocab, msg::Vocab,
                             msg::TokenLogprobs>;

MsgType message_type(const Message& m);
std::string_view message_name(MsgType t);
bool is_known_type(std::uint8_t type);

// Header and payload in one buffer: a frame goes out in one write.
std::vector<std::uint8_t> encode_frame(const Message& m, std::uint32_t request_id);
// Payload only (for tests and size accounting).
std::vector<std::uint8_t> encode_payload(const Message& m);
// Parses a payload of the given type. Errors: unknown_message, bad_message (size or field).
Result<Message> decode_payload(std::uint8_t type, std::span<const std::uint8_t> payload);

// An ERROR frame for e (code via to_wire).
std::vector<std::uint8_t> encode_error_frame(errc e, std::string_view message, bool fatal, std::uint32_t request_id);

}  // namespace llamawire
