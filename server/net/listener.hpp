// Accept loop: one strand and one session coroutine per connection, with a connection cap.
#pragma once

#include "common/asio.hpp"
#include "server/net/server_context.hpp"

#include <cstdint>
#include <exception>
#include <functional>
#include <string>

namespace llamawire {

// Serves one accepted connection (a session or an HTTP connection) on its own strand.
using ServeFn = std::function<asio::awaitable<void>(tcp::socket)>;

// Accepts until the acceptor closes. Past --max-connections (both protocols together) a
// connection is refused at once: with an ERROR busy frame when `binary_refusal` is set and
// the connection is not TLS, else just closed.
asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, ServerContext& ctx, ServeFn serve, bool binary_refusal);

// Opens, binds and listens; the error names the address.
Result<void> open_acceptor(tcp::acceptor& acceptor, const std::string& address, std::uint16_t port);

// Completion handler for spawned sessions: logs what escaped, keeps the server serving.
void log_session_end(std::exception_ptr e);

}  // namespace llamawire
