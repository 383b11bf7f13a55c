// The packed (row-interleaved) block matrices: packing is lossless, the reference product
// agrees with ggml's row-major one, and every SIMD table gives the reference's bits for any
// batch and row range.
#include "server/kernels/kernels.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace k = llamawire::kernels;
using T = k::TensorType;

namespace {

// Random bytes for every quantized field (any bit pattern a file may hold, -128 included),
// with the binary16 scales drawn as finite values of moderate size.
std::vector<std::uint8_t> random_rows(T type, int rows, int n, std::mt19937& rng) {
  const std::size_t rb = k::row_bytes(type, static_cast<std::size_t>(n));
  std::vector<std::uint8_t> w(rb * static_cast<std::size_t>(rows));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : w) b = static_cast<std::uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  auto half = [&](std::uint8_t* p) {
    const std::uint16_t h = k::float_to_half(scale(rng));
    std::memcpy(p, &h, 2);
  };
  const std::size_t bb = k::traits(type).bytes;
  for (std::size_t off = 0; off < w.size(); off += bb) {
    std::uint8_t* blk = w.data() + off;
    switch (type) {
      case T::q8_0:
      case T::q4_0: half(blk); break;
      case T::q4_k:
      case T::q5_k:
        half(blk);
        half(blk + 2);
        break;
      case T::q6_k: half(blk + offsetof(k::BlockQ6K, d)); break;
      default: FAIL("not a packable type");
    }
  }
  return w;
}

// Quantized activation rows, and their float values in xf.
std::vector<std::uint8_t> activations(T act, int batch, int n, std::mt19937& rng, bool extreme, std::vector<float>& xf) {
  const std::size_t xb = k::act_row_bytes(act, static_cast<std::size_t>(n));
  std::vector<std::uint8_t> x(xb * static_cast<std::size_t>(batch));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  xf.resize(static_cast<std::size_t>(batch * n));
  // extreme: every value at +-max of its block, so each quantizes to +-127
  for (auto& v : xf) v = extreme ? (nd(rng) < 0 ? -1.0f : 1.0f) : nd(rng);
  for (int b = 0; b < batch; ++b) {
    k::quantize_act_row(act, xf.data() + b * n, x.data() + xb * static_cast<std::size_t>(b), static_cast<std::size_t>(n));
  }
  return x;
}

std::vector<std::uint8_t> pack(T type, const std::vector<std::uint8_t>& w, int rows, int n) {
  const std::size_t rb = k::row_bytes(type, static_cast<std::size_t>(n));
  const k::PackedMatrix shape{type, nullptr, n, rows};
  std::vector<std::uint8_t> p(shape.group_bytes() * static_cast<std::size_t>(rows / k::kTileRows));
  for (int g = 0; g < rows / k::kTileRows; ++g) {
    k::pack_group(type, w.data() + rb * static_cast<std::size_t>(g * k::kTileRows), rb, n,
                  p.data() + shape.group_bytes() * static_cast<std::size_t>(g));
  }
  return p;
}

}  // namespace

TEST_CASE("packed matrices: lossless packing, the reference against ggml's order, every table bit for bit",
          "[kernels][packed]") {
  std::mt19937 rng(11);
  for (const T type : {T::q8_0, T::q4_0, T::q4_k, T::q5_k, T::q6_k}) {
    const int blk = k::packed_block(type);
    for (const int blocks : {1, 3, 11}) {
      const int n = blk * blocks, rows = 48;
      const std::size_t rb = k::row_bytes(type, static_cast<std::size_t>(n));
      const auto w = random_rows(type, rows, n, rng);
      const auto p = pack(type, w, rows, n);
      const k::PackedMatrix pm{type, p.data(), n, rows};
      INFO(k::traits(type).name << " n=" << n);

      // Every row reads back as ggml dequantizes it.
      std::vector<float> a(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n));
      for (int i = 0; i < rows; ++i) {
        k::dequantize_row(type, w.data() + rb * static_cast<std::size_t>(i), a.data(), a.size());
        k::packed_row(pm, i, b.data());
        REQUIRE(a == b);
      }

      for (const auto& [extreme, batch] : {std::pair{false, 13}, std::pair{true, 13}, std::pair{false, 37}}) {
        // 13: column groups of 8 (or 6 / 4 / 3), 4, 2 and 1 all run, or one zero-padded
        // AMX slice; 37: two whole 16-row AMX slices and a padded one
        const T act = k::traits(type).act;
        const std::size_t xb = k::act_row_bytes(act, static_cast<std::size_t>(n));
        std::vector<float> xf;
        const auto x = activations(act, batch, n, rng, extreme, xf);
        const k::BlockAct ba{act, x.data(), xb};
        std::vector<float> ref(static_cast<std::size_t>(batch * rows), -1.0f), ggml(ref.size(), -1.0f);
        k::matmul_packed_ref(ref.data(), ba, pm, batch, 0, rows);
        k::scalar_table().matmul_blocks(ggml.data(), ba, k::BlockMatrix{type, w.data(), rb}, n, rows, batch, 0, rows);
        for (int c = 0; c < batch; ++c) {
          for (int i = 0; i < rows; ++i) {
            // Same integers, float steps in another order: within a few ulps of the magnitude.
            k::dequantize_row(type, w.data() + rb * static_cast<std::size_t>(i), a.data(), a.size());
            double mag = 0;
            for (int j = 0; j < n; ++j) mag += std::abs(static_cast<double>(a[j]) * xf[static_cast<std::size_t>(c * n + j)]);
            const std::size_t at = static_cast<std::size_t>(c * rows + i);
            INFO("row " << i << " col " << c << " extreme " << extreme);
            CHECK(std::abs(ref[at] - ggml[at]) <= 2e-6 * mag + 1e-9);
          }
        }
        for (const k::KernelTable* t : k::available_tables()) {
          INFO(t->name);
          std::vector<float> got(ref.size(), -2.0f);
          t->matmul_packed(got.data(), ba, pm, batch, 0, rows);
          REQUIRE(got == ref);
          // The whole batch on the rows in two ranges (two threads' shares): the same bits.
          std::vector<float> split(ref.size(), -4.0f);
          t->matmul_packed(split.data(), ba, pm, batch, 16, rows);
          t->matmul_packed(split.data(), ba, pm, batch, 0, 16);
          REQUIRE(split == ref);
          // One activation row at a time, and the rows in two ranges: the same bits.
          for (int c = 0; c < batch; ++c) {
            std::vector<float> one(static_cast<std::size_t>(rows), -3.0f);
            const k::BlockAct a1{act, x.data() + xb * static_cast<std::size_t>(c), xb};
            t->matmul_packed(one.data(), a1, pm, 1, 0, 16);
            t->matmul_packed(one.data(), a1, pm, 1, 16, rows);
            for (int i = 0; i < rows; ++i) REQUIRE(one[static_cast<std::size_t>(i)] == ref[static_cast<std::size_t>(c * rows + i)]);
          }
        }
      }
    }
  }
}

TEST_CASE("SIMD activation quantization gives the scalar reference's bytes", "[kernels][packed]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int n = 2048;
  std::vector<float> x(static_cast<std::size_t>(n));
  for (int trial = 0; trial < 6; ++trial) {
    for (int j = 0; j < n; ++j) {
      float v = nd(rng) * (trial % 2 ? 100.0f : 0.01f);
      // Ties on purpose: exact halves after scaling by 127 / max land on the rounding edge.
      if (trial >= 2 && j % 7 == 0) v = static_cast<float>(j % 255 - 127) * 0.5f;
      if (trial == 4 && j < 512) v = 0.0f;                // all-zero blocks
      if (trial == 5 && j % 256 == 3) v = -1000.0f;       // the largest magnitude negative
      if (trial == 5 && j % 256 == 200) v = 1000.0f;      // and a later tie of it, positive
      x[static_cast<std::size_t>(j)] = v;
    }
    for (const T act : {T::q8_0, T::q8_1, T::q8_k}) {
      const std::size_t rb = k::act_row_bytes(act, static_cast<std::size_t>(n));
      std::vector<std::uint8_t> ref(rb, 0xAA);
      k::quantize_act_range(act, x.data(), ref.data(), static_cast<std::size_t>(n), 0, static_cast<std::size_t>(n));
      for (const k::KernelTable* t : k::available_tables()) {
        INFO(t->name << " " << k::traits(act).name << " trial " << trial);
        std::vector<std::uint8_t> got(rb, 0x55);
        // In two ranges, as the threads split a row.
        t->quantize_act(act, x.data(), got.data(), static_cast<std::size_t>(n), 0, 1024);
        t->quantize_act(act, x.data(), got.data(), static_cast<std::size_t>(n), 1024, static_cast<std::size_t>(n));
        REQUIRE(got == ref);
      }
    }
  }
}
