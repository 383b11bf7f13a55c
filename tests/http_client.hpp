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

// The value of a series in Prometheus text (`name{labels}` as written), or -1 when absent.
double prometheus_value(const std::string& text, const std::string& series);

}  // namespace llamawire::test
