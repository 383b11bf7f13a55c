#include "server/net/listener.hpp"

#include "common/log.hpp"
#include "common/messages.hpp"
#include "server/net/session.hpp"

#include <chrono>

namespace llamawire {

void log_session_end(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error("session ended by an exception: ", ex.what());
  } catch (...) {
    log::error("session ended by an unknown exception");
  }
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, ServerContext& ctx, ServeFn serve, bool binary_refusal) {
  auto io = acceptor.get_executor();
  for (;;) {
    auto strand = asio::make_strand(io);
    auto [ec, socket] = co_await acceptor.async_accept(strand, asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      log::warn("accept failed: ", ec.message());
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
        // Out of file descriptors: back off instead of spinning.
        asio::steady_timer t(io, std::chrono::milliseconds(100));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      continue;
    }
    // At the limit, an idle HTTP connection makes room (it is closed at once; the count
    // passes the limit by one for that moment) before anyone is refused.
    if (ctx.counters().connections_open.load() >= ctx.options().max_connections && !ctx.close_an_idle_connection()) {
      ctx.counters().connections_refused++;
      boost::system::error_code wec;
      if (binary_refusal && ctx.tls() == nullptr) {  // a plaintext frame means nothing to a TLS client
        socket.non_blocking(true, wec);
        const auto frame = encode_error_frame(
            errc::busy, "server busy: connection limit " + std::to_string(ctx.options().max_connections) + " reached",
            true, 0);
        socket.write_some(asio::buffer(frame), wec);  // best effort, never blocks
      }
      socket.close(wec);
      log::warn("refused connection: connection limit ", ctx.options().max_connections, " reached");
      continue;
    }
    asio::co_spawn(strand, serve(std::move(socket)), log_session_end);
  }
}

Result<void> open_acceptor(tcp::acceptor& acceptor, const std::string& address, std::uint16_t port) {
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(address, ec);
  if (ec) return make_error(errc::bad_argument, "bad address " + address + ": " + ec.message());
  const tcp::endpoint ep(addr, port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(errc::io_error, "cannot listen on " + address + ":" + std::to_string(port) + ": " + ec.message());
  return {};
}

}  // namespace llamawire
