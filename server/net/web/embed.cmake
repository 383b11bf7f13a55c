# Writes OUT, a C++ file defining llamawire::web_index_html() with the bytes of IN (the chat
# page), so that the page is part of the server binary (no files to install, no CDN).
file(READ "${IN}" bytes HEX)
string(LENGTH "${bytes}" n)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," array "${bytes}")
file(WRITE "${OUT}" "// Generated from server/net/web/index.html by server/net/web/embed.cmake: do not edit.
#include \"server/net/web_assets.hpp\"
namespace llamawire {
namespace {
constexpr char kIndexHtml[] = {${array}};
}  // namespace
std::string_view web_index_html() { return {kIndexHtml, sizeof kIndexHtml}; }
}  // namespace llamawire
")
