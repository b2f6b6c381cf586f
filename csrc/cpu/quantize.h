// quantize.h: the int8 cell scores of the search's first stage (centroids and query tokens, row-wise).
//
// A row x (d floats) becomes q = rint(x / s) in [-127, 127] (int8) with s = max(max_j |x_j|, 1e-30) / 127,
// every operation one IEEE float operation in this order (numpy's float32 arithmetic gives the same
// values: plaidx/engine/cellq.py quantize_int8, also the rule of the int8 rerank tier). A cell score is then
//   score(c, a) = (float(dot(qc[c], qa[a])) * s_c) * s_a,
// where the integer dot product is exact in any summation order (|dot| <= 127 * 127 * d < 2^24 for
// d <= kMaxQuantizedDim, so it is exact as a float sum too): every implementation (the avx512-vnni, the
// generic and the CUDA kernels, the numpy reference) gives the same value bit for bit.
// Thread-safety: pure functions on caller buffers.
#pragma once

#include <cmath>
#include <cstdint>

namespace plaidx::cpu {

// The largest d whose int8 dot products are exact as float sums (127 * 127 * d < 2^24).
constexpr int64_t kMaxQuantizedDim = 1024;

// rint(x) in the default rounding mode (nearest, ties to even), for |x| < 2^22: adding and subtracting
// 1.5 * 2^23 leaves the float grid at 1, so the sum rounds x as nearbyint does (-0.0 comes back as +0.0,
// which converts to the same integer). Two float additions that vectorise, where nearbyint is a library
// call without SSE4.1.
inline float round_small(float x) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
  return (x + kShift) - kShift;
}

// q (n, d), scale (n,) and, when sums is not nullptr, sums (n,) = sum_j q[i, j] of the rows of x (n, d);
// false when a value is not finite (the outputs are then unspecified).
inline bool quantize_rows(const float* x, int64_t n, int64_t d, int8_t* q, float* scale, int32_t* sums = nullptr) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * d;
    float m = 0.0f;
    bool finite = true;
    for (int64_t j = 0; j < d; ++j) {
      const float v = std::fabs(row[j]);
      finite &= v <= 3.4028234663852886e38f;  // false for inf and NaN
      m = v > m ? v : m;
    }
    if (!finite) return false;
    const float s = (m > 1e-30f ? m : 1e-30f) / 127.0f;
    int32_t total = 0;
    for (int64_t j = 0; j < d; ++j) {
      // |row[j] / s| <= 127 (up to a rounding), well inside round_small's range
      float r = round_small(row[j] / s);
      r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
      q[i * d + j] = static_cast<int8_t>(r);
      total += static_cast<int32_t>(r);
    }
    scale[i] = s;
    if (sums != nullptr) sums[i] = total;
  }
  return true;
}

// The exact stage's int8 rows (search with exact_int8): decoded tokens x (n, d), not normalised, quantised
// as their unit vectors would be, without normalising them first:
//   p = max(max_j |x_j|, 1e-30), q_j = rint(x_j * (127 / p)) clamped to [-127, 127],
//   scale = (p / 127) / max(||x||, 1e-12),
// so that q * scale ~= x / ||x||. The bytes are one float operation per step (the reference's numpy gives
// the same); ||x|| is summed in the kernel's order, so scales may differ between copies in the last bit.
// n rows; the input is finite by construction (centroid plus bucket weight).
inline void quantize_unit_rows(const float* x, int64_t n, int64_t d, int8_t* q, float* scale) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * d;
    float m = 0.0f, ss = 0.0f;
    for (int64_t j = 0; j < d; ++j) {
      const float v = std::fabs(row[j]);
      m = v > m ? v : m;
      ss += row[j] * row[j];
    }
    const float p = m > 1e-30f ? m : 1e-30f;
    const float inv = 127.0f / p;
    for (int64_t j = 0; j < d; ++j) {
      float r = round_small(row[j] * inv);  // |row[j] * inv| <= 127 (up to a rounding)
      r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
      q[i * d + j] = static_cast<int8_t>(r);
    }
    const float norm = std::sqrt(ss);
    scale[i] = (p / 127.0f) / (norm < 1e-12f ? 1e-12f : norm);
  }
}

}  // namespace plaidx::cpu
