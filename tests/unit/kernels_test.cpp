#include "server/kernels/kernels.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

namespace k = llamawire::kernels;

namespace {

std::vector<const k::KernelTable*> simd_tables() {
  std::vector<const k::KernelTable*> out;
  for (const auto* t : k::available_tables()) {
    if (t != &k::scalar_table()) out.push_back(t);
  }
  return out;
}

std::vector<float> random_vec(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// |a - b| <= eps * sum |terms| (+ a tiny absolute floor), the error bound of a reordered sum.
void check_close(float got, float ref, float magnitude) {
  INFO("got " << got << " ref " << ref << " magnitude " << magnitude);
  CHECK(std::abs(got - ref) <= 4e-6f * magnitude + 1e-30f);
}

const int kSizes[] = {1, 7, 8, 33, 64, 255, 4097};

}  // namespace

TEST_CASE("SIMD tables exist on this machine", "[kernels]") {
  // The CI machines have AVX2 and FMA; if this fails the SIMD path is not being tested.
  CHECK_FALSE(simd_tables().empty());
  const char* env = std::getenv("LW_KERNELS");
  const std::string_view best = k::cpu_has_amx_int8() ? "amx" : k::cpu_has_avx512_vnni() ? "avx512-vnni" : k::cpu_has_avx_vnni() ? "avx2-vnni" : "avx2";
  CHECK(k::available_tables().back()->name == best);
  CHECK(k::active().name == (env ? std::string_view(env) : best));
}

TEST_CASE("SIMD dot, axpy, rmsnorm, softmax match scalar on odd sizes", "[kernels]") {
  const auto& ref = k::scalar_table();
  std::mt19937 rng(7);
  for (const auto* t : simd_tables()) {
    for (int n : kSizes) {
      INFO(t->name << " n=" << n);
      const auto a = random_vec(static_cast<std::size_t>(n), rng), b = random_vec(static_cast<std::size_t>(n), rng);
      float mag = 0;
      for (int i = 0; i < n; ++i) mag += std::abs(a[static_cast<std::size_t>(i)] * b[static_cast<std::size_t>(i)]);
      check_close(t->dot(a.data(), b.data(), n), ref.dot(a.data(), b.data(), n), mag);

      auto y1 = b, y2 = b;
      t->axpy(y1.data(), 0.37f, a.data(), n);
      ref.axpy(y2.data(), 0.37f, a.data(), n);
      for (int i = 0; i < n; ++i) {
        const auto u = static_cast<std::size_t>(i);
        check_close(y1[u], y2[u], std::abs(b[u]) + std::abs(0.37f * a[u]));
      }

      std::vector<float> o1(static_cast<std::size_t>(n)), o2(static_cast<std::size_t>(n));
      t->rmsnorm(o1.data(), a.data(), b.data(), n, 1e-5f);
      ref.rmsnorm(o2.data(), a.data(), b.data(), n, 1e-5f);
      for (int i = 0; i < n; ++i) {
        const auto u = static_cast<std::size_t>(i);
        CHECK(std::abs(o1[u] - o2[u]) <= 1e-5f * (std::abs(o2[u]) + std::abs(b[u])));
      }

      auto s1 = random_vec(static_cast<std::size_t>(n), rng, 10.0f), s2 = s1;
      t->softmax(s1.data(), n);
      ref.softmax(s2.data(), n);
      for (int i = 0; i < n; ++i) {
        const auto u = static_cast<std::size_t>(i);
        CHECK(std::abs(s1[u] - s2[u]) <= 1e-6f * std::max(1.0f, s2[u]) + 1e-7f);
      }
    }
  }
}

TEST_CASE("SIMD matmul matches scalar on odd shapes and batches", "[kernels]") {
  const auto& ref = k::scalar_table();
  std::mt19937 rng(11);
  for (const auto* t : simd_tables()) {
    for (int n : kSizes) {
      for (int d : {1, 3, 5, 17, 33}) {
        for (int batch : {1, 2, 3, 5}) {
          INFO(t->name << " n=" << n << " d=" << d << " batch=" << batch);
          const auto w = random_vec(static_cast<std::size_t>(n * d), rng);
          const auto x = random_vec(static_cast<std::size_t>(n * batch), rng);
          std::vector<float> o1(static_cast<std::size_t>(d * batch), -1.0f), o2 = o1;
          // a sub-range of rows, as a thread would get
          const int r0 = d > 2 ? 1 : 0;
          t->matmul(o1.data(), x.data(), w.data(), n, d, batch, r0, d);
          ref.matmul(o2.data(), x.data(), w.data(), n, d, batch, r0, d);
          for (int b = 0; b < batch; ++b) {
            for (int i = 0; i < d; ++i) {
              const auto u = static_cast<std::size_t>(b * d + i);
              if (i < r0) {
                CHECK(o1[u] == -1.0f);  // rows outside the range untouched
                continue;
              }
              float mag = 0;
              for (int j = 0; j < n; ++j) {
                mag += std::abs(w[static_cast<std::size_t>(i * n + j)] * x[static_cast<std::size_t>(b * n + j)]);
              }
              check_close(o1[u], o2[u], mag);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("SIMD Q8_0 matmul matches the scalar reference", "[kernels]") {
  const auto& ref = k::scalar_table();
  std::mt19937 rng(13);
  for (const auto* t : simd_tables()) {
    for (int gs : {32, 64, 96}) {  // 96: the kernel's path for any multiple of 32
      for (int n : {gs, 3 * gs, 4096 / gs * gs}) {
        for (int d : {1, 7, 33}) {
          for (int batch : {1, 3, 6}) {
            INFO(t->name << " gs=" << gs << " n=" << n << " d=" << d << " batch=" << batch);
            const auto wf = random_vec(static_cast<std::size_t>(n * d), rng);
            const auto xf = random_vec(static_cast<std::size_t>(n * batch), rng);
            std::vector<std::int8_t> wq(wf.size()), xq(xf.size());
            std::vector<float> ws(wf.size() / static_cast<std::size_t>(gs)), xs(xf.size() / static_cast<std::size_t>(gs));
            for (int i = 0; i < d; ++i) {
              ref.quantize_q8(wq.data() + i * n, ws.data() + i * (n / gs), wf.data() + i * n, n, gs);
            }
            for (int b = 0; b < batch; ++b) {
              t->quantize_q8(xq.data() + b * n, xs.data() + b * (n / gs), xf.data() + b * n, n, gs);
            }
            const k::Q8Matrix W{wq.data(), ws.data(), gs};
            const k::Q8Vector X{xq.data(), xs.data(), gs};
            std::vector<float> o1(static_cast<std::size_t>(d * batch)), o2(o1.size());
            t->matmul_q8(o1.data(), X, W, n, d, batch, 0, d);
            ref.matmul_q8(o2.data(), X, W, n, d, batch, 0, d);
            // Group sums are exact integers; only the float sum across groups is reordered.
            for (int b = 0; b < batch; ++b) {
              for (int i = 0; i < d; ++i) {
                float mag = 0;
                for (int j = 0; j < n; ++j) {
                  mag += std::abs(static_cast<float>(wq[static_cast<std::size_t>(i * n + j)]) *
                                  static_cast<float>(xq[static_cast<std::size_t>(b * n + j)])) *
                         ws[static_cast<std::size_t>((i * n + j) / gs)] * xs[static_cast<std::size_t>((b * n + j) / gs)];
                }
                check_close(o1[static_cast<std::size_t>(b * d + i)], o2[static_cast<std::size_t>(b * d + i)], mag);
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("Q8_0 quantization round-trips within half a step", "[kernels]") {
  std::mt19937 rng(17);
  const auto x = random_vec(256, rng, 3.0f);
  std::vector<std::int8_t> q(256);
  std::vector<float> s(8);
  k::scalar_table().quantize_q8(q.data(), s.data(), x.data(), 256, 32);
  for (int i = 0; i < 256; ++i) {
    const float scale = s[static_cast<std::size_t>(i / 32)];
    CHECK(std::abs(q[static_cast<std::size_t>(i)] * scale - x[static_cast<std::size_t>(i)]) <= 0.5f * scale + 1e-6f);
  }
  // An all-zero group quantizes to zeros with scale 0 (no division by zero).
  std::vector<float> z(32, 0.0f);
  k::scalar_table().quantize_q8(q.data(), s.data(), z.data(), 32, 32);
  CHECK(s[0] == 0.0f);
  CHECK(q[0] == 0);
}

TEST_CASE("a row's result does not depend on the rest of the batch (bit for bit)", "[kernels]") {
  std::mt19937 rng(19);
  std::vector<const k::KernelTable*> tables = simd_tables();
  tables.push_back(&k::scalar_table());
  for (const auto* t : tables) {
    for (int n : {7, 64, 777}) {
      const int d = 9;
      const auto w = random_vec(static_cast<std::size_t>(n * d), rng);
      const auto x = random_vec(static_cast<std::size_t>(n * 5), rng);
      std::vector<float> all(static_cast<std::size_t>(d * 5));
      t->matmul(all.data(), x.data(), w.data(), n, d, 5, 0, d);
      for (int b = 0; b < 5; ++b) {
        std::vector<float> one(static_cast<std::size_t>(d));
        t->matmul(one.data(), x.data() + b * n, w.data(), n, d, 1, 0, d);
        for (int i = 0; i < d; ++i) REQUIRE(one[static_cast<std::size_t>(i)] == all[static_cast<std::size_t>(b * d + i)]);
      }
    }
    // Q8_0: every batch size (the AVX2 kernel takes items four at a time, then the rest)
    // gives each item the bits it gets alone; 41 groups cross the kernel's block of 32
    // group scales, 96 and 128 take its path for any multiple of 32.
    for (const int gs : {32, 64, 96, 128}) {
      for (const int batch : {2, 3, 4, 5, 9}) {
        INFO(t->name << " q8 gs=" << gs << " batch=" << batch);
        const int n = (gs == 32 ? 41 : 3) * gs, d = 5;
        const auto wf = random_vec(static_cast<std::size_t>(n * d), rng);
        const auto xf = random_vec(static_cast<std::size_t>(n * batch), rng);
        std::vector<std::int8_t> wq(wf.size()), xq(xf.size());
        std::vector<float> ws(wf.size() / static_cast<std::size_t>(gs)), xs(xf.size() / static_cast<std::size_t>(gs));
        for (int i = 0; i < d; ++i) t->quantize_q8(wq.data() + i * n, ws.data() + i * (n / gs), wf.data() + i * n, n, gs);
        for (int b = 0; b < batch; ++b) {
          t->quantize_q8(xq.data() + b * n, xs.data() + b * (n / gs), xf.data() + b * n, n, gs);
        }
        std::vector<float> all(static_cast<std::size_t>(d * batch));
        t->matmul_q8(all.data(), {xq.data(), xs.data(), gs}, {wq.data(), ws.data(), gs}, n, d, batch, 0, d);
        for (int b = 0; b < batch; ++b) {
          std::vector<float> one(static_cast<std::size_t>(d));
          t->matmul_q8(one.data(), {xq.data() + b * n, xs.data() + b * (n / gs), gs}, {wq.data(), ws.data(), gs}, n, d,
                       1, 0, d);
          for (int i = 0; i < d; ++i) {
            REQUIRE(one[static_cast<std::size_t>(i)] == all[static_cast<std::size_t>(b * d + i)]);
          }
        }
      }
    }
  }
}

namespace {

// A row-major [d][n] matrix and its panel-layout copy.
struct Panels {
  std::vector<float> rows;
  std::vector<float> packed;
};

Panels make_panels(int n, int d, std::mt19937& rng) {
  Panels p;
  p.rows = random_vec(static_cast<std::size_t>(n) * static_cast<std::size_t>(d), rng);
  p.packed = p.rows;
  std::vector<float> scratch(static_cast<std::size_t>(k::kPanelRows) * static_cast<std::size_t>(n));
  k::pack_panels(p.packed.data(), n, d, scratch.data());
  return p;
}

}  // namespace

TEST_CASE("panel layout packs in place and reads back every row", "[kernels]") {
  std::mt19937 rng(23);
  for (int d : {1, 15, 16, 17, 48, 53}) {
    for (int n : {1, 7, 64}) {
      INFO("d=" << d << " n=" << n);
      const Panels p = make_panels(n, d, rng);
      std::vector<float> row(static_cast<std::size_t>(n));
      for (int i = 0; i < d; ++i) {
        k::panel_row(p.packed.data(), n, d, i, row.data());
        REQUIRE(std::equal(row.begin(), row.end(), p.rows.begin() + static_cast<std::ptrdiff_t>(i) * n));
      }
      if (d >= 16 && n > 1) CHECK(p.packed != p.rows);  // whole panels really moved
    }
  }
}

TEST_CASE("panel matmul matches the row-major scalar reference", "[kernels]") {
  const auto& ref = k::scalar_table();
  std::mt19937 rng(29);
  std::vector<const k::KernelTable*> tables = simd_tables();
  tables.push_back(&ref);
  for (const auto* t : tables) {
    for (int n : {1, 7, 64, 255}) {
      for (int d : {3, 16, 33, 80}) {
        for (int batch : {1, 2, 3, 4, 5, 6, 7, 13, 16}) {
          INFO(t->name << " n=" << n << " d=" << d << " batch=" << batch);
          const Panels w = make_panels(n, d, rng);
          const auto x = random_vec(static_cast<std::size_t>(n * batch), rng);
          std::vector<float> o1(static_cast<std::size_t>(d * batch), -1.0f), o2 = o1;
          const int r0 = d > 2 ? 1 : 0;  // a range starting inside the first panel
          t->matmul_panels(o1.data(), x.data(), w.packed.data(), n, d, batch, r0, d);
          ref.matmul(o2.data(), x.data(), w.rows.data(), n, d, batch, r0, d);
          for (int b = 0; b < batch; ++b) {
            for (int i = 0; i < d; ++i) {
              const auto u = static_cast<std::size_t>(b * d + i);
              if (i < r0) {
                CHECK(o1[u] == -1.0f);
                continue;
              }
              float mag = 0;
              for (int j = 0; j < n; ++j) {
                mag += std::abs(w.rows[static_cast<std::size_t>(i * n + j)] * x[static_cast<std::size_t>(b * n + j)]);
              }
              check_close(o1[u], o2[u], mag);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("panel matmul: each output is the sequential fused sum, whatever the batch and range", "[kernels]") {
  // The property continuous batching relies on: a session's logits have the same bits
  // alone, in any batch, at any position in it, and whichever thread's range holds a row.
  std::mt19937 rng(31);
  for (const auto* t : simd_tables()) {
    for (int n : {5, 64, 777}) {
      const int d = 53;  // three whole panels and a 5-row tail
      const Panels w = make_panels(n, d, rng);
      const int max_batch = 26;  // two 12-row passes of the AVX-512 tile and a rest
      const auto x = random_vec(static_cast<std::size_t>(n * max_batch), rng);
      // Reference: one row at a time, sum = fma(w, x, sum) from j = 0.
      std::vector<float> expect(static_cast<std::size_t>(d * max_batch));
      for (int b = 0; b < max_batch; ++b) {
        for (int i = 0; i < d; ++i) {
          float s = 0.0f;
          for (int j = 0; j < n; ++j) s = std::fma(w.rows[static_cast<std::size_t>(i * n + j)], x[static_cast<std::size_t>(b * n + j)], s);
          expect[static_cast<std::size_t>(b * d + i)] = s;
        }
      }
      for (int batch = 1; batch <= max_batch; ++batch) {
        for (int off = 0; off + batch <= max_batch; off += 5) {
          for (auto [r0, r1] : {std::pair{0, d}, std::pair{16, 32}, std::pair{7, 50}, std::pair{48, 53}}) {
            INFO(t->name << " n=" << n << " batch=" << batch << " offset=" << off << " rows " << r0 << ".." << r1);
            std::vector<float> out(static_cast<std::size_t>(d * batch));
            t->matmul_panels(out.data(), x.data() + off * n, w.packed.data(), n, d, batch, r0, r1);
            for (int b = 0; b < batch; ++b) {
              for (int i = r0; i < r1; ++i) {
                REQUIRE(out[static_cast<std::size_t>(b * d + i)] == expect[static_cast<std::size_t>((off + b) * d + i)]);
              }
            }
          }
        }
      }
    }
  }
  // The scalar table's panel sum is unfused but likewise independent of the batch.
  const auto& s = k::scalar_table();
  const int n = 64, d = 21;
  const Panels w = make_panels(n, d, rng);
  const auto x = random_vec(static_cast<std::size_t>(n * 5), rng);
  std::vector<float> all(static_cast<std::size_t>(d * 5));
  s.matmul_panels(all.data(), x.data(), w.packed.data(), n, d, 5, 0, d);
  for (int b = 0; b < 5; ++b) {
    std::vector<float> one(static_cast<std::size_t>(d));
    s.matmul_panels(one.data(), x.data() + b * n, w.packed.data(), n, d, 1, 0, d);
    for (int i = 0; i < d; ++i) REQUIRE(one[static_cast<std::size_t>(i)] == all[static_cast<std::size_t>(b * d + i)]);
  }
}

TEST_CASE("attention block kernels equal their dot/axpy loops bit for bit", "[kernels]") {
  std::mt19937 rng(37);
  std::vector<const k::KernelTable*> tables = simd_tables();
  tables.push_back(&k::scalar_table());
  for (const auto* t : tables) {
    for (int n : {8, 48, 64, 72, 128}) {
      for (int count : {1, 5, 16}) {
        INFO(t->name << " n=" << n << " count=" << count);
        const std::size_t stride = static_cast<std::size_t>(n) * 3 + 5;
        const auto q = random_vec(static_cast<std::size_t>(n), rng);
        const auto kv = random_vec(stride * static_cast<std::size_t>(count), rng);
        std::vector<float> att(static_cast<std::size_t>(count)), ref_att(att.size());
        t->attn_scores(att.data(), q.data(), kv.data(), stride, count, n, 8.0f);
        for (int i = 0; i < count; ++i) ref_att[static_cast<std::size_t>(i)] = t->dot(q.data(), kv.data() + static_cast<std::size_t>(i) * stride, n) / 8.0f;
        REQUIRE(att == ref_att);
        std::vector<float> out = random_vec(static_cast<std::size_t>(n), rng), ref_out = out;
        t->attn_values(out.data(), att.data(), kv.data(), stride, count, n);
        for (int i = 0; i < count; ++i) t->axpy(ref_out.data(), att[static_cast<std::size_t>(i)], kv.data() + static_cast<std::size_t>(i) * stride, n);
        REQUIRE(out == ref_out);
      }
    }
  }
}

TEST_CASE("block-format products: every SIMD table against the scalar reference, batch-invariant", "[kernels][gguf]") {
  using T = k::TensorType;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const T type : {T::f16, T::bf16, T::q8_0, T::q4_0, T::q4_1, T::q5_0, T::q5_1, T::q4_k, T::q5_k, T::q6_k}) {
    const int block = k::traits(type).block == 1 ? 32 : k::traits(type).block;
    for (const int blocks : {1, 3, 7}) {
      const int n = block * blocks + (k::traits(type).block == 1 ? 5 : 0);  // 16-bit floats: odd lengths too
      const int d = 37;
      const std::size_t rb = k::row_bytes(type, static_cast<std::size_t>(n));
      std::vector<std::uint8_t> w(rb * d);
      std::vector<float> row(static_cast<std::size_t>(n));
      for (int i = 0; i < d; ++i) {
        for (auto& v : row) v = nd(rng) * (i % 5 == 0 ? 4.0f : 0.5f);
        k::quantize_row(type, row.data(), w.data() + rb * static_cast<std::size_t>(i), row.size());
      }
      const int batch = 7;
      const T act = k::traits(type).act;
      const std::size_t xb = k::act_row_bytes(act, static_cast<std::size_t>(n));
      std::vector<std::uint8_t> x(xb * batch);
      std::vector<float> xf(static_cast<std::size_t>(n) * batch);
      for (auto& v : xf) v = nd(rng);
      for (int b = 0; b < batch; ++b) k::quantize_act_row(act, xf.data() + b * n, x.data() + xb * b, static_cast<std::size_t>(n));
      const k::BlockMatrix m{type, w.data(), rb};
      const k::BlockAct a{act, x.data(), xb};
      std::vector<float> ref(static_cast<std::size_t>(batch) * d);
      k::scalar_table().matmul_blocks(ref.data(), a, m, n, d, batch, 0, d);
      // The scalar product agrees with dequantize-then-multiply.
      std::vector<float> wf(static_cast<std::size_t>(n)), af(static_cast<std::size_t>(n));
      for (int i = 0; i < d; ++i) {
        k::dequantize_row(type, w.data() + rb * static_cast<std::size_t>(i), wf.data(), wf.size());
        double exact = 0, mag = 0;
        for (int j = 0; j < n; ++j) {
          exact += static_cast<double>(wf[j]) * xf[static_cast<std::size_t>(j)];
          mag += std::abs(static_cast<double>(wf[j]) * xf[static_cast<std::size_t>(j)]);
        }
        // Activation quantization (8 bits) is the only difference for the integer types.
        const double tol = (act == T::f32 ? 1e-5 : 2e-2) * mag + 1e-6;
        INFO(k::traits(type).name << " n=" << n << " row " << i);
        CHECK(std::abs(ref[static_cast<std::size_t>(i)] - exact) <= tol);
      }
      for (const auto* t : simd_tables()) {
        INFO(t->name << " " << k::traits(type).name << " n=" << n);
        std::vector<float> got(ref.size(), -1.0f);
        t->matmul_blocks(got.data(), a, m, n, d, batch, 0, d);
        for (int b = 0; b < batch; ++b) {
          for (int i = 0; i < d; ++i) {
            const std::size_t at = static_cast<std::size_t>(b) * d + i;
            CHECK(std::abs(got[at] - ref[at]) <= 1e-4f * (1.0f + std::abs(ref[at])));
          }
        }
        // Batch invariance: each activation row alone, over odd row ranges, gives the same bits.
        for (int b = 0; b < batch; ++b) {
          std::vector<float> one(static_cast<std::size_t>(d), -2.0f);
          const k::BlockAct a1{act, x.data() + xb * b, xb};
          t->matmul_blocks(one.data(), a1, m, n, d, 1, 0, 13);
          t->matmul_blocks(one.data(), a1, m, n, d, 1, 13, d);
          for (int i = 0; i < d; ++i) CHECK(one[static_cast<std::size_t>(i)] == got[static_cast<std::size_t>(b) * d + i]);
        }
      }
    }
  }
}
