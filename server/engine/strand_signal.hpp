// A wake-up signal between coroutines on one strand: notify() resumes every coroutine
// waiting at that moment (a broadcast, like a condition variable's notify_all; a notify with
// no waiter is not kept, so waiters re-check their condition in a loop). Each waiter parks
// on a one-slot channel of its own. Not thread-safe: wait() and notify() run on the strand.
#pragma once

#include "common/asio.hpp"

#include <boost/asio/experimental/channel.hpp>

#include <memory>
#include <vector>

namespace llamawire {

class StrandSignal {
 public:
  explicit StrandSignal(asio::any_io_executor ex) : ex_(std::move(ex)) {}

  asio::awaitable<void> wait() {
    auto ch = std::make_shared<Channel>(ex_, 1);
    waiting_.push_back(ch);
    boost::system::error_code ec;
    co_await ch->async_receive(asio::redirect_error(asio::use_awaitable, ec));
  }
  void notify() {
    auto waiting = std::move(waiting_);
    waiting_.clear();
    for (const auto& ch : waiting) ch->try_send(boost::system::error_code{});
  }

 private:
  using Channel = asio::experimental::channel<void(boost::system::error_code)>;
  asio::any_io_executor ex_;
  std::vector<std::shared_ptr<Channel>> waiting_;
};

}  // namespace llamawire
