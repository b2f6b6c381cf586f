// token.h: inline decoding of compressed token rows (centroid + residual weights) and normalization.
//
// Decoding reads a per-call decode table (see codec.h: build_decode_table) so that every packed byte
// expands with one lookup: table[(p * 256 + byte) * dpb + u] is the residual weight of dimension
// p * dpb + u (dpb = 8 / nbits dimensions per byte) for that byte value. For nbits == 8 the table is the
// weights array itself. decoded[j] = centroid[j] + weight, a single float addition, so decoding is
// exact and identical to the reference.
//
// normalize() scales by 1 / max(||v||, 1e-12); the squared norm is summed in 8 lanes (j mod 8) combined
// in a fixed order, so the result does not depend on blocking or threads.
//
// Thread-safety: pure functions on caller buffers.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/simd.h"

namespace plaidx::cpu {

// Decodes rows [0, nt) into out (nt, d). codes (nt,), packed (nt, pb), centroids (nlist, d).
// Returns false (leaving later rows undecoded) when a code is >= nlist.
template <int NBITS>
PLAIDX_INLINE bool decode_rows(const uint16_t* codes, const uint8_t* packed, int64_t nt,
                               const float* centroids, int64_t nlist, const float* table, int64_t d,
                               float* out) {
  constexpr int dpb = 8 / NBITS;
  const int64_t pb = d / dpb;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) return false;
    const float* cent = centroids + c * d;
    const uint8_t* row = packed + t * pb;
    float* o = out + t * d;
    for (int64_t p = 0; p < pb; ++p)
      add_small<dpb>(o + p * dpb, cent + p * dpb, table + ((p << 8) + row[p]) * dpb);
  }
  return true;
}

PLAIDX_INLINE bool decode_rows_any(int nbits, const uint16_t* codes, const uint8_t* packed, int64_t nt,
                                   const float* centroids, int64_t nlist, const float* table, int64_t d,
                                   float* out) {
  switch (nbits) {
    case 1: return decode_rows<1>(codes, packed, nt, centroids, nlist, table, d, out);
    case 2: return decode_rows<2>(codes, packed, nt, centroids, nlist, table, d, out);
    case 4: return decode_rows<4>(codes, packed, nt, centroids, nlist, table, d, out);
    default: return decode_rows<8>(codes, packed, nt, centroids, nlist, table, d, out);
  }
}

// Asks the cache for the centroid rows of tokens [t0, t1) (random rows of a table that is usually
// larger than L2), so that they arrive while the previous block is being scored. Codes >= nlist are
// skipped here (decode_rows reports them).
PLAIDX_INLINE void prefetch_centroids(const uint16_t* codes, int64_t t0, int64_t t1, const float* centroids,
                                      int64_t nlist, int64_t d) {
#if defined(__GNUC__)
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) continue;
    const char* row = reinterpret_cast<const char*>(centroids + c * d);
    for (int64_t b = 0; b < d * static_cast<int64_t>(sizeof(float)); b += 64) __builtin_prefetch(row + b);
  }
#else
  (void)codes, (void)t0, (void)t1, (void)centroids, (void)nlist, (void)d;
#endif
}

// v (d,) /= max(||v||, 1e-12). d: multiple of 8.
PLAIDX_INLINE void normalize(float* v, int64_t d) {
  v8f s = vzero();
  for (int64_t j = 0; j < d; j += 8) {
    const v8f x = vload(v + j);
    s += x * x;
  }
  const float total = ((vlane(s, 0) + vlane(s, 1)) + (vlane(s, 2) + vlane(s, 3))) +
                      ((vlane(s, 4) + vlane(s, 5)) + (vlane(s, 6) + vlane(s, 7)));
  const float norm = std::sqrt(total);
  const float denom = norm < 1e-12f ? 1e-12f : norm;  // NaN stays NaN, like np.maximum
  const float inv = 1.0f / denom;                     // one rounding more than a division, far cheaper
  for (int64_t j = 0; j < d; j += 8) vstore(v + j, inv * vload(v + j));
}

}  // namespace plaidx::cpu
