// The OpenAI-compatible HTTP API (Boost.Beast + Boost.JSON) on --http-port: completions,
// chat completions (plain and Server-Sent Events), models, health and Prometheus metrics.
// It shares the scheduler (and so the batches) with the binary protocol.
#pragma once

#include <string>
#include <vector>

#include "common/asio.hpp"
#include "server/net/server_context.hpp"

#include <cstddef>

namespace llamawire {

struct HttpOptions {
  std::size_t max_body_bytes = 1u << 20;
  // Origins whose browser pages may call the API (--cors-origin; "*": any); empty: none.
  std::vector<std::string> cors_origins;
};

// Serves one HTTP/1.1 connection (keep-alive, SSE streams) until it closes.
asio::awaitable<void> serve_http_connection(tcp::socket socket, ServerContext& ctx, HttpOptions opts);

}  // namespace llamawire
