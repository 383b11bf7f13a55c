// The OpenAI-compatible HTTP API (Boost.Beast + Boost.JSON) on --http-port: completions,
// chat completions (plain and Server-Sent Events), models, health and Prometheus metrics.
// It shares the scheduler (and so the batches) with the binary protocol.
#pragma once

#include "common/asio.hpp"
#include "server/net/server_context.hpp"

#include <cstddef>

namespace llamawire {

struct HttpOptions {
  std::size_t max_body_bytes = 1u << 20;
};

asio::awaitable<void> http_accept_loop(tcp::acceptor& acceptor, ServerContext& ctx, HttpOptions opts);

}  // namespace llamawire
