#include "server/kernels/kernels.hpp"

#include <atomic>
#include <cstdlib>
#include <string>

namespace llamawire::kernels {
namespace {

const KernelTable* pick_default() {
  const char* env = std::getenv("LW_KERNELS");
  if (env != nullptr && std::string_view(env) == "scalar") return &scalar_table();
#if defined(__x86_64__) || defined(__i386__)
  if (avx2_table() != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    if (env != nullptr && std::string_view(env) == "avx2") return avx2_table();
    if (avx2_vnni_table() != nullptr && __builtin_cpu_supports("avxvnni")) return avx2_vnni_table();
    return avx2_table();
  }
#endif
  return &scalar_table();
}

std::atomic<const KernelTable*>& current() {
  static std::atomic<const KernelTable*> table{pick_default()};
  return table;
}

}  // namespace

const KernelTable& active() { return *current().load(std::memory_order_relaxed); }

bool select(std::string_view name) {
  if (name == "scalar") {
    current() = &scalar_table();
    return true;
  }
  if (name == "avx2") {
#if defined(__x86_64__) || defined(__i386__)
    if (avx2_table() != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      current() = avx2_table();
      return true;
    }
#endif
    return false;
  }
  if (name == "avx2-vnni") {
#if defined(__x86_64__) || defined(__i386__)
    if (avx2_vnni_table() != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("avxvnni")) {
      current() = avx2_vnni_table();
      return true;
    }
#endif
    return false;
  }
  return false;
}

}  // namespace llamawire::kernels
