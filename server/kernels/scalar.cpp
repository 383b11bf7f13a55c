// Reference kernels: plain loops in llama2.c's order. Readable over fast; the oracle for
// every SIMD table.
#include "server/kernels/kernels.hpp"

#include <algorithm>
#include <cmath>

namespace llamawire::kernels {
namespace {

void matmul(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
            int row_end) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<std::size_t>(b) * n;
    float* ob = out + static_cast<std::size_t>(b) * d;
    for (int i = row_begin; i < row_end; ++i) {
      const float* wi = w + static_cast<std::size_t>(i) * n;
      float val = 0.0f;
      for (int j = 0; j < n; ++j) val += wi[j] * xb[j];
      ob[i] = val;
    }
  }
}

void matmul_panels(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                   int row_end) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<std::size_t>(b) * n;
    float* ob = out + static_cast<std::size_t>(b) * d;
    for (int i = row_begin; i < row_end; ++i) {
      float val = 0.0f;
      for (int j = 0; j < n; ++j) val += w[panel_index(i, j, n, d)] * xb[j];
      ob[i] = val;
    }
  }
}

void matmul_q8(float* out, const Q8Vector& x, const Q8Matrix& w, int n, int d, int batch,
               int row_begin, int row_end) {
  const int gs = w.group;
  const int groups = n / gs;
  for (int b = 0; b < batch; ++b) {
    const std::int8_t* xq = x.q + static_cast<std::size_t>(b) * n;
    const float* xs = x.s + static_cast<std::size_t>(b) * groups;
    float* ob = out + static_cast<std::size_t>(b) * d;
    for (int i = row_begin; i < row_end; ++i) {
      const std::int8_t* wq = w.q + static_cast<std::size_t>(i) * n;
      const float* ws = w.s + static_cast<std::size_t>(i) * groups;
      float val = 0.0f;
      for (int g = 0; g < groups; ++g) {
        std::int32_t ival = 0;
        for (int k = 0; k < gs; ++k) {
          ival += static_cast<std::int32_t>(xq[g * gs + k]) * static_cast<std::int32_t>(wq[g * gs + k]);
        }
        val += static_cast<float>(ival) * ws[g] * xs[g];
      }
      ob[i] = val;
    }
  }
}

void matmul_blocks(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch, int row_begin,
                   int row_end) {
  for (int b = 0; b < batch; ++b) {
    const std::uint8_t* xb = x.data + static_cast<std::size_t>(b) * x.row_bytes;
    float* ob = out + static_cast<std::size_t>(b) * d;
    for (int i = row_begin; i < row_end; ++i) {
      ob[i] = dot_row(w.type, w.data + static_cast<std::size_t>(i) * w.row_bytes, xb, static_cast<std::size_t>(n));
    }
  }
}

void quantize_q8(std::int8_t* q, float* s, const float* x, int n, int group) {
  // runq.c: scale = max|x| / 127, values rounded half away from zero.
  constexpr float kQMax = 127.0f;
  for (int g = 0; g < n / group; ++g) {
    float wmax = 0.0f;
    for (int k = 0; k < group; ++k) wmax = std::fmax(wmax, std::fabs(x[g * group + k]));
    const float scale = wmax / kQMax;
    s[g] = scale;
    for (int k = 0; k < group; ++k) {
      const float v = scale != 0.0f ? x[g * group + k] / scale : 0.0f;
      q[g * group + k] = static_cast<std::int8_t>(std::round(v));
    }
  }
}

float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float* y, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

void attn_scores(float* att, const float* q, const float* k, std::size_t stride, int count, int n, float divisor) {
  for (int t = 0; t < count; ++t) att[t] = dot(q, k + static_cast<std::size_t>(t) * stride, n) / divisor;
}

void attn_values(float* out, const float* att, const float* v, std::size_t stride, int count, int n) {
  for (int t = 0; t < count; ++t) axpy(out, att[t], v + static_cast<std::size_t>(t) * stride, n);
}

void rmsnorm(float* o, const float* x, const float* w, int n, float eps) {
  float ss = 0.0f;
  for (int j = 0; j < n; ++j) ss += x[j] * x[j];
  ss /= static_cast<float>(n);
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  for (int j = 0; j < n; ++j) o[j] = w[j] * (ss * x[j]);
}

void softmax(float* x, int n) {
  float max_val = x[0];
  for (int i = 1; i < n; ++i) max_val = x[i] > max_val ? x[i] : max_val;
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_val);
    sum += x[i];
  }
  for (int i = 0; i < n; ++i) x[i] /= sum;
}

}  // namespace

void pack_panels(float* w, int n, int d, float* scratch) {
  const auto N = static_cast<std::size_t>(n);
  const std::size_t panel = kPanelRows * N;
  for (int p = 0; p < d / kPanelRows; ++p) {
    float* base = w + static_cast<std::size_t>(p) * panel;
    std::copy_n(base, panel, scratch);
    for (std::size_t r = 0; r < kPanelRows; ++r) {
      for (std::size_t j = 0; j < N; ++j) base[j * kPanelRows + r] = scratch[r * N + j];
    }
  }
}

void panel_row(const float* w, int n, int d, int i, float* out) {
  for (int j = 0; j < n; ++j) out[j] = w[panel_index(i, j, n, d)];
}

const KernelTable& scalar_table() {
  static const KernelTable table{"scalar", matmul, matmul_panels, matmul_q8, matmul_blocks, matmul_packed_ref, quantize_act_range, quantize_q8, dot, attn_scores, attn_values, axpy, rmsnorm, softmax};
  return table;
}

}  // namespace llamawire::kernels
