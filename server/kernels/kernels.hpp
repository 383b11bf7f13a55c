// The kernel table: plain numeric routines over float arrays, knowing nothing of models or
// sessions. scalar.cpp is the readable reference (llama2.c's operation order); SIMD
// tables must agree with it within a tolerance scaled by the magnitudes summed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "server/kernels/packed.hpp"
#include "server/kernels/tensor_types.hpp"

namespace llamawire::kernels {

// A Q8_0 matrix: rows x cols int8 values, one float scale per `group` consecutive values
// of a row (cols % group == 0).
struct Q8Matrix {
  const std::int8_t* q = nullptr;  // [rows][cols]
  const float* s = nullptr;        // [rows][cols / group]
  int group = 0;
};

// Activations quantized the same way, one row per batch item.
struct Q8Vector {
  std::int8_t* q = nullptr;  // [batch][n]
  float* s = nullptr;        // [batch][n / group]
  int group = 0;
};

struct KernelTable {
  std::string_view name;

  // out[b][i] = sum_j w[i][j] * x[b][j] for b in [0, batch), i in [row_begin, row_end).
  // x: [batch][n], w: [d][n], out: [batch][d]. Rows are independent: callers split them
  // across threads.
  void (*matmul)(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                 int row_end);
  // The same product with w in panel layout (see pack_panels). Each output is the plain
  // sequential sum over j of w[i][j] * x[b][j] (fused multiply-adds on SIMD tables), so its
  // bits depend on neither the batch nor the row range: batching is free of numeric effects
  // and the kernel can block rows and activations in registers. Ranges that start or end
  // inside a panel are correct, only slower; callers split at multiples of kPanelRows.
  void (*matmul_panels)(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                        int row_end);
  // Same with Q8_0 weights and Q8_0 activations (integer dot per group, float across groups).
  void (*matmul_q8)(float* out, const Q8Vector& x, const Q8Matrix& w, int n, int d, int batch,
                    int row_begin, int row_end);
  // Block-format weights (GGUF types) against activations already in traits(w.type).act's
  // format (quantize_act_row): out[b][i] for b in [0, batch), i in [row_begin, row_end).
  // Each (row, activation) product is summed in an order that depends on neither the batch
  // nor the row range.
  void (*matmul_blocks)(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch,
                        int row_begin, int row_end);
  // Packed block-format weights (packed.hpp) against activations in traits(w.type).act's
  // format; rows [row_begin, row_end) are multiples of kTileRows. Every table gives
  // matmul_packed_ref's bits.
  void (*matmul_packed)(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end);
  // quantize_act_range (tensor_types.hpp), with the same bits.
  void (*quantize_act)(TensorType act, const float* x, std::uint8_t* dst, std::size_t n, std::size_t begin,
                       std::size_t end);
  // Quantize `n` floats (n % group == 0) into q/s.
  void (*quantize_q8)(std::int8_t* q, float* s, const float* x, int n, int group);
  float (*dot)(const float* a, const float* b, int n);
  // Attention over `count` consecutive cached positions whose rows are `stride` floats
  // apart (one KV block): att[t] = dot(q, k + t*stride, n) / divisor, each dot in dot()'s
  // order; and out += att[t] * (v + t*stride) for t in order, as repeated axpy() would.
  void (*attn_scores)(float* att, const float* q, const float* k, std::size_t stride, int count, int n, float divisor);
  void (*attn_values)(float* out, const float* att, const float* v, std::size_t stride, int count, int n);
  // y += a * x
  void (*axpy)(float* y, float a, const float* x, int n);
  // o = w * (x / sqrt(mean(x^2) + eps)); llama2.c's eps is 1e-5, a GGUF file gives its own
  void (*rmsnorm)(float* o, const float* x, const float* w, int n, float eps);
  void (*softmax)(float* x, int n);
};

// Panel layout of a [d][n] float matrix: each block of kPanelRows consecutive rows is
// stored k-major ([n][kPanelRows], one 64-byte line per column), so a GEMM micro-kernel
// reads 16 rows' weights for one column in one load; the last d % kPanelRows rows stay
// row-major after the panels. Same size as the row-major matrix, so packing is in place.
inline constexpr int kPanelRows = 16;

inline std::size_t panel_index(int i, int j, int n, int d) {
  const int full = d / kPanelRows * kPanelRows;
  const auto N = static_cast<std::size_t>(n);
  if (i < full) {
    return static_cast<std::size_t>(i / kPanelRows) * kPanelRows * N + static_cast<std::size_t>(j) * kPanelRows +
           static_cast<std::size_t>(i % kPanelRows);
  }
  return static_cast<std::size_t>(i) * N + static_cast<std::size_t>(j);
}

// Rewrites a row-major [d][n] matrix into panel layout in place; `scratch` holds
// kPanelRows * n floats.
void pack_panels(float* w, int n, int d, float* scratch);
// Row i of a panel-layout matrix, into out[0, n).
void panel_row(const float* w, int n, int d, int i, float* out);

const KernelTable& scalar_table();
// The AVX2 block-format products (avx2_blocks.cpp; the scalar ones where not built).
void matmul_blocks_avx2(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch, int row_begin,
                        int row_end);
// AVX2 activation quantization (avx2_act.cpp; the scalar one where not built).
void quantize_act_avx2(TensorType act, const float* x, std::uint8_t* dst, std::size_t n, std::size_t begin,
                       std::size_t end);
// The same built with AVX-VNNI (vpdpbusd); only for CPUs that have it.
void matmul_blocks_avxvnni(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch, int row_begin,
                           int row_end);
// The same built with AVX-512 VNNI (EVEX vpdpbusd on 8 lanes); only for CPUs that have it.
void matmul_blocks_avx512vnni(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch,
                              int row_begin, int row_end);
// The AVX2 table with the AVX-VNNI block products, or nullptr when not built.
const KernelTable* avx2_vnni_table();
// Whether this CPU has AVX-VNNI (CPUID), for the dispatch and the tests.
bool cpu_has_avx_vnni();
// The AVX2+FMA table, or nullptr when it was not built.
const KernelTable* avx2_table();
// The panel GEMM on 16-lane registers (avx512_f32.cpp; the scalar one where not built):
// matmul_panels's bits.
void matmul_panels_avx512(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                          int row_end);
// The AVX2 table with the AVX-512 panel GEMM and AVX-512 VNNI packed products, or nullptr
// when not built.
const KernelTable* avx512_vnni_table();
// Whether this CPU has AVX-512 F, BW, VL and VNNI (and the OS saves the registers).
bool cpu_has_avx512_vnni();
// The avx512-vnni table with the packed products of batches on AMX tiles, or nullptr when
// not built.
const KernelTable* amx_table();
// Whether this CPU has AMX-TILE and AMX-INT8 and the kernel lets this process use the tile
// state (asked for once, with arch_prctl, on the first call).
bool cpu_has_amx_int8();

// One step of a spin-wait: the CPU's pause hint (x86), else a yield. For the compute
// pool, which waits on its workers for tens of microseconds between steps.
void spin_pause();

// The table chosen once at startup: LW_KERNELS=scalar|avx2|avx2-vnni|avx512-vnni|amx forces
// one (when the CPU has it); otherwise the best the CPU supports.
const KernelTable& active();
// Forces a table by name ("scalar", "avx2", "avx2-vnni", "avx512-vnni", "amx"); returns false if
// unavailable here. For tests/tools.
bool select(std::string_view name);
// The tables this CPU can run, best last.
std::vector<const KernelTable*> available_tables();

}  // namespace llamawire::kernels
