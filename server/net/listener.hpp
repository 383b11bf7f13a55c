// Accept loop: one strand and one session coroutine per connection, with a connection cap.
#pragma once

#include "common/asio.hpp"
#include "server/net/server_context.hpp"

#include <exception>

namespace llamawire {

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, ServerContext& ctx);

// Completion handler for spawned sessions: logs what escaped, keeps the server serving.
void log_session_end(std::exception_ptr e);

}  // namespace llamawire
