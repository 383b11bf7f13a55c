// The web chat page (server/net/web/index.html), compiled into the server: GET / serves it.
#pragma once

#include <string_view>

namespace llamawire {

std::string_view web_index_html();

}  // namespace llamawire
