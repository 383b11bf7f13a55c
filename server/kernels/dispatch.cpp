#include "server/kernels/kernels.hpp"

#include <atomic>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#else
#include <thread>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace llamawire::kernels {

void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

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

bool cpu_has_avx512_vnni() {
#if defined(__x86_64__) || defined(__i386__)
  // __builtin_cpu_supports checks that the OS saves the AVX-512 state as well.
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

bool cpu_has_amx_int8() {
#if defined(__x86_64__) && defined(__linux__)
  static const bool ok = [] {
    // CPUID leaf 7, EDX bits 24 (AMX-TILE) and 25 (AMX-INT8); then Linux must grant this
    // process the 8 KiB tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA),
    // or the first tile instruction faults.
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
    if ((d & (1u << 24)) == 0 || (d & (1u << 25)) == 0 || !cpu_has_avx512_vnni()) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

namespace {

bool has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  // F16C by CPUID (leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports has no name for it.
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 29)) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#else
  return false;
#endif
}

// The table named `name` if it was built and this CPU runs it.
const KernelTable* usable(std::string_view name) {
  if (name == "scalar") return &scalar_table();
  if (!has_avx2()) return nullptr;
  if (name == "avx2") return avx2_table();
  if (name == "avx2-vnni") return cpu_has_avx_vnni() ? avx2_vnni_table() : nullptr;
  if (name == "avx512-vnni") return cpu_has_avx512_vnni() ? avx512_vnni_table() : nullptr;
  if (name == "amx") return cpu_has_amx_int8() ? amx_table() : nullptr;
  return nullptr;
}

constexpr std::string_view kByPreference[] = {"amx", "avx512-vnni", "avx2-vnni", "avx2", "scalar"};

const KernelTable* pick_default() {
  const char* env = std::getenv("LW_KERNELS");
  if (env != nullptr) {
    if (const KernelTable* t = usable(env)) return t;
  }
  for (std::string_view name : kByPreference) {
    if (const KernelTable* t = usable(name)) return t;
  }
  return &scalar_table();
}

std::atomic<const KernelTable*>& current() {
  static std::atomic<const KernelTable*> table{pick_default()};
  return table;
}

}  // namespace

const KernelTable& active() { return *current().load(std::memory_order_relaxed); }

bool select(std::string_view name) {
  const KernelTable* t = usable(name);
  if (t == nullptr) return false;
  current() = t;
  return true;
}

std::vector<const KernelTable*> available_tables() {
  std::vector<const KernelTable*> out;
  for (auto it = std::rbegin(kByPreference); it != std::rend(kByPreference); ++it) {
    if (const KernelTable* t = usable(*it)) out.push_back(t);
  }
  return out;
}

}  // namespace llamawire::kernels
