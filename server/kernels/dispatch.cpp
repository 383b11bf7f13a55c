#include "server/kernels/kernels.hpp"

#include <atomic>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace llamawire::kernels {

bool cpu_has_avx_vnni() {
#if defined(__x86_64__) || defined(__i386__)
  // CPUID leaf 7, sub-leaf 1, EAX bit 4 (clang 14's __builtin_cpu_supports has no name for
  // it). The OS saving the AVX registers is already implied by the AVX2 check beside it.
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) == 0) return false;
  return (a & (1u << 4)) != 0;
#else
  return false;
#endif
}

namespace {

const KernelTable* pick_default() {
  const char* env = std::getenv("LW_KERNELS");
  if (env != nullptr && std::string_view(env) == "scalar") return &scalar_table();
#if defined(__x86_64__) || defined(__i386__)
  if (avx2_table() != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    if (env != nullptr && std::string_view(env) == "avx2") return avx2_table();
    if (avx2_vnni_table() != nullptr && cpu_has_avx_vnni()) return avx2_vnni_table();
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
        cpu_has_avx_vnni()) {
      current() = avx2_vnni_table();
      return true;
    }
#endif
    return false;
  }
  return false;
}

}  // namespace llamawire::kernels
