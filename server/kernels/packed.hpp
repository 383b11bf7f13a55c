// Row-interleaved ("packed") block matrices: the GGUF types Q8_0, Q4_0, Q4_K, Q5_K and Q6_K
// rearranged at load so that the integer products run on 16 rows at once, one row per
// 32-bit lane, with no horizontal sums.
//
// Rows are taken 16 at a time (a group); a group's tiles, one per super-block (32 values
// for Q8_0 and Q4_0, 256 for the K types), follow each other, so a group is one contiguous
// run of memory. Within a tile every per-row field is stored for the 16 rows side by side,
// and the quantized values as 64-byte "chunks": byte 4r+i of chunk c is value 4c+i of row r
// (so one vpdpbusd with four broadcast activation bytes adds four products to each row's
// lane). Values are stored unsigned (Q8_0 as w + 128); the offset comes back through the
// activation block's integer sum. Tile layouts, per 16-row group and super-block:
//
//   Q8_0 (544 B)  d[16] f16 | 8 chunks of w + 128
//   Q4_0 (288 B)  d[16] f16 | 4 nibble lines: byte 4r+i of line t holds value 4t+i in its low
//                 nibble and value 16+4t+i in its high one (which is ggml's qs byte 4t+i)
//   Q4_K (2368 B) d[16] | dmin[16] f16 | sc[8][16] u8 | mins as pairs m[4][16][2] u8 |
//                 8 sub-blocks x 4 nibble lines
//   Q5_K (2880 B) Q4_K's tile | per sub-block 8 chunk masks (u64, bit 4r+i: the fifth bit)
//   Q6_K (3360 B) d[16] f16 | sc[16][16] s8 | 8 spans of 32 values x 4 nibble lines (low four
//                 bits) | 8 spans x 2 lines of high bits: byte 4r+i of line h holds, in bits
//                 2t..2t+1, the high bits of value 4(4h+t)+i of the span
//
// The products, for row r and activation row c (the order of every float operation is
// part of the contract: all tables follow it, so their results are bit-identical to
// matmul_packed_ref's, whatever the batch or the row range):
//
//   Q8_0, Q4_0: acc = 0; per block k: s = sum_i u[r][i] x[c][i] - off * xsum[c][k] (int32,
//     off 128 or 8); acc = fma(float(s), d[r] * dx[c], acc)
//   Q4_K, Q5_K: per block: t = 0; per sub-block j (32 values): t = fma(float(sum_i q x),
//     float(sc[r][j]), t); m = sum_j mins[r][j] * xsum32[c][j] (int32);
//     acc = fma(t, d[r] * dx, acc); acc = fma(float(m), -(dmin[r] * dx), acc)
//   Q6_K: per block: t = 0; per sub-block j (16 values): t = fma(float(sum_i q x - 32 *
//     xsum16[c][j]), float(sc[r][j]), t); acc = fma(t, d[r] * dx, acc)
//
// Integer sums are exact, so their order is free; each (row, activation) pair has one float
// accumulator, updated block by block in order.
#pragma once

#include "server/kernels/tensor_types.hpp"

#include <cstddef>
#include <cstdint>

namespace llamawire::kernels {

inline constexpr int kTileRows = 16;

// Whether matrices of type t can be packed (and are, when the weights are read into memory).
bool packable(TensorType t);
// Values per super-block (32 or 256) and bytes per tile (16 rows x one super-block).
int packed_block(TensorType t);
std::size_t packed_tile_bytes(TensorType t);

// A packed matrix of d rows (d % kTileRows == 0) by n values.
struct PackedMatrix {
  TensorType type = TensorType::f32;
  const std::uint8_t* data = nullptr;
  int n = 0;
  int d = 0;
  // Bytes of one 16-row group: (n / packed_block) tiles.
  std::size_t group_bytes() const;
  const std::uint8_t* group(int g) const { return data + static_cast<std::size_t>(g) * group_bytes(); }
};

// Packs 16 rows of ggml blocks (row i at src + i * src_row_bytes, n values each) into one
// group at dst (group_bytes() bytes).
void pack_group(TensorType t, const std::uint8_t* src, std::size_t src_row_bytes, int n, std::uint8_t* dst);
// Row i of a packed matrix, dequantized into out[0, n); the same values as ggml's.
void packed_row(const PackedMatrix& w, int i, float* out);

// The reference product: out[b][i] for b in [0, batch) and i in [row_begin, row_end), both
// multiples of kTileRows, with activations in traits(w.type).act's format.
void matmul_packed_ref(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end);
// The SIMD versions (packed_simd.cpp, built three times); each falls back to the reference
// where its instruction set was not compiled in.
void matmul_packed_avx2(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end);
void matmul_packed_avxvnni(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin,
                           int row_end);
void matmul_packed_avx512(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin,
                          int row_end);
// AMX-INT8 tiles for batches of 8 rows or more, matmul_packed_avx512 below that
// (packed_amx.cpp; only for CPUs where cpu_has_amx_int8()).
void matmul_packed_amx(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end);

}  // namespace llamawire::kernels
