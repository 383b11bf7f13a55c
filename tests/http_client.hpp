// A small synchronous HTTP/1.1 client (Boost.Beast) for the HTTP API tests.
#pragma once

#include <map>
#include <string>

namespace llamawire::test {

struct HttpResult {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
};

// method "GET"/"POST"; headers e.g. {"Authorization", "Bearer x"}; reads until the server
// closes or the response is complete.
HttpResult http_request(int port, const std::string& method, const std::string& target, const std::string& body = "",
                        const std::map<std::string, std::string>& headers = {});

}  // namespace llamawire::test
