#include "client/cli.hpp"
#include "client/exit_codes.hpp"

#include <iostream>

namespace llamawire {

int bench_main(int, char**) {
  std::cerr << "llamawire bench: not built yet\n";
  return kExitUsage;
}

}  // namespace llamawire
