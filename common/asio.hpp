// The one place that names Boost.Asio for the project.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

namespace llamawire {
namespace asio = boost::asio;
using tcp = boost::asio::ip::tcp;
}  // namespace llamawire
