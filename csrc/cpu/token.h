// token.h: inline decoding of compressed token rows (centroid + residual weights) and normalization.
//
// Decoding reads a per-call decode table (see codec.h: build_decode_table) so that every packed byte
// expands with one lookup: table[(p * 256 + byte) * dpb + u] is the residual weight of dimension
// p * dpb + u (dpb = 8 / nbits dimensions per byte) for that byte value. For nbits == 8 the table is the
// weights array itself. decoded[j] = centroid[j] + weight, a single float addition, so decoding is
// exact and identical to the reference.
//
// A product-quantised residual (codec "pq", format 5) is the same lookup with a table the index stores
// (one 256-entry codebook of dpb-dimensional sub-vectors per byte) and, with levels, a per-token scale:
// decoded[j] = centroid[j] + levels[last packed byte >> 4] * weight. Table entries and levels carry at
// most 12 significant bits, so the product is exact and the result is again one rounding.
//
// normalize() scales by 1 / max(||v||, 1e-12); the squared norm is summed in 8 lanes (j mod 8) combined
// in a fixed order, so the result does not depend on blocking or threads.
//
// Thread-safety: pure functions on caller buffers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/simd.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define PLAIDX_HAVE_DECODE2_AVX512 1
#else
#define PLAIDX_HAVE_DECODE2_AVX512 0
#endif

namespace plaidx::cpu {

// Decodes rows [0, nt) into out (nt, d). codes (nt,), packed (nt, pb), centroids (nlist, d).
// Returns false (leaving later rows undecoded) when a code is >= nlist. Code: uint16_t or uint32_t
// (the centroid ids' width), here and in every function below that reads codes.
// levels (16,) or nullptr: each row's residual scaled by levels[high nibble of its last packed byte].
template <int NBITS, class Code>
PLAIDX_INLINE bool decode_rows(const Code* codes, const uint8_t* packed, int64_t nt,
                               const float* centroids, int64_t nlist, const float* table, int64_t d,
                               float* out, const float* levels = nullptr) {
  constexpr int dpb = 8 / NBITS;
  const int64_t pb = d / dpb;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) return false;
    const float* cent = centroids + c * d;
    const uint8_t* row = packed + t * pb;
    float* o = out + t * d;
    if (levels != nullptr) {
      const float s = levels[row[pb - 1] >> 4];
      for (int64_t p = 0; p < pb; ++p)
        add_scaled<dpb>(o + p * dpb, cent + p * dpb, table + ((p << 8) + row[p]) * dpb, s);
    } else {
      for (int64_t p = 0; p < pb; ++p)
        add_small<dpb>(o + p * dpb, cent + p * dpb, table + ((p << 8) + row[p]) * dpb);
    }
  }
  return true;
}

template <class Code>
PLAIDX_INLINE bool decode_rows_any(int nbits, const Code* codes, const uint8_t* packed, int64_t nt,
                                   const float* centroids, int64_t nlist, const float* table, int64_t d,
                                   float* out, const float* levels = nullptr) {
  switch (nbits) {
    case 1: return decode_rows<1>(codes, packed, nt, centroids, nlist, table, d, out, levels);
    case 2: return decode_rows<2>(codes, packed, nt, centroids, nlist, table, d, out, levels);
    case 4: return decode_rows<4>(codes, packed, nt, centroids, nlist, table, d, out, levels);
    default: return decode_rows<8>(codes, packed, nt, centroids, nlist, table, d, out, levels);
  }
}

// Asks the cache for the centroid rows of tokens [t0, t1) (random rows of a table that is usually
// larger than L2), so that they arrive while the previous block is being scored. Codes >= nlist are
// skipped here (decode_rows reports them).
template <class Code>
PLAIDX_INLINE void prefetch_centroids(const Code* codes, int64_t t0, int64_t t1, const float* centroids,
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

// Asks the cache for rows [0, nt) of a (nt, row_bytes) byte array (the residual codes of the next
// document: its first cache lines, before the hardware prefetcher has seen the stream).
PLAIDX_INLINE void prefetch_bytes(const uint8_t* rows, int64_t nt, int64_t row_bytes) {
#if defined(__GNUC__)
  const char* p = reinterpret_cast<const char*>(rows);
  for (int64_t b = 0; b < nt * row_bytes; b += 64) __builtin_prefetch(p + b);
#else
  (void)rows, (void)nt, (void)row_bytes;
#endif
}

// v (d,) /= max(||v||, 1e-12), given s: the squares of v summed in 8 lanes (lane l over j = l, l + 8, ...).
PLAIDX_INLINE void scale_to_unit(float* v, int64_t d, v8f s) {
  const float total = ((vlane(s, 0) + vlane(s, 1)) + (vlane(s, 2) + vlane(s, 3))) +
                      ((vlane(s, 4) + vlane(s, 5)) + (vlane(s, 6) + vlane(s, 7)));
  const float norm = std::sqrt(total);
  const float denom = norm < 1e-12f ? 1e-12f : norm;  // NaN stays NaN, like np.maximum
  const float inv = 1.0f / denom;                     // one rounding more than a division, far cheaper
  for (int64_t j = 0; j < d; j += 8) vstore(v + j, inv * vload(v + j));
}

// v (d,) /= max(||v||, 1e-12). d: multiple of 8.
PLAIDX_INLINE void normalize(float* v, int64_t d) {
  v8f s = vzero();
  for (int64_t j = 0; j < d; j += 8) {
    const v8f x = vload(v + j);
    s += x * x;
  }
  scale_to_unit(v, d, s);
}

// normalize() on each row of v (nt, d), four rows at a time: the same values, but four independent
// chains of multiply-adds instead of one, which a single row's latency would otherwise serialise.
PLAIDX_INLINE void normalize_rows(float* v, int64_t nt, int64_t d) {
  int64_t t = 0;
  for (; t + 4 <= nt; t += 4) {
    float* r = v + t * d;
    v8f s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();
    for (int64_t j = 0; j < d; j += 8) {
      const v8f x0 = vload(r + j), x1 = vload(r + d + j), x2 = vload(r + 2 * d + j), x3 = vload(r + 3 * d + j);
      s0 += x0 * x0;
      s1 += x1 * x1;
      s2 += x2 * x2;
      s3 += x3 * x3;
    }
    scale_to_unit(r, d, s0);
    scale_to_unit(r + d, d, s1);
    scale_to_unit(r + 2 * d, d, s2);
    scale_to_unit(r + 3 * d, d, s3);
  }
  for (; t < nt; ++t) normalize(v + t * d, d);
}

#if PLAIDX_HAVE_DECODE2_AVX512
// Whether decode2_avx512 may run here (AVX-512F, BMI2 and OS support; PLAIDX_SIMD caps it
// like every other AVX-512 copy).
inline bool have_decode2_avx512() {
  static const bool ok = runtime_isa() == Isa::kAvx512 && __builtin_cpu_supports("bmi2");
  return ok;
}

// GCC 12's own intrinsics headers trip these on _mm512_undefined_* in the reductions below (a known false
// positive).
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// One decoded step's statistics (peak and sum of squares, 16 lanes) and their reduction into row t: the int8
// exact stage's quantisation statistics, gathered by both AVX-512 decoders below in the same order.
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline void stats_step(__m512 v, __m512& m, __m512& ss) {
  m = _mm512_max_ps(m, _mm512_abs_ps(v));
  ss = _mm512_fmadd_ps(v, v, ss);
}
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline void stats_store(__m512 m, __m512 ss, float* peak,
                                                                                  float* sq, int64_t t) {
  peak[t] = _mm512_reduce_max_ps(m);
  sq[t] = _mm512_reduce_add_ps(ss);
}

// One 16-dimension step of decode2_avx512 (dimensions j..j+15 of a row; cent, row: the token's centroid and packed
// bytes), with a scalar codec's planes (4, d): the two code bits of 16 dimensions are gathered into two lane masks
// (pext), which pick each dimension's bucket weight with three blends; centroid + weight. Tail: the last 8
// dimensions (d % 16 == 8), in the low lanes (the upper ones 0).
template <bool Tail>
__attribute__((target("avx512f,avx2,fma,bmi2"), always_inline)) inline __m512 step_planes(
    const float* planes, int64_t d, const float* cent, const uint8_t* row, int64_t j) {
  uint32_t w = 0;
  std::memcpy(&w, row + j / 4, Tail ? 2 : 4);
  const __mmask16 keep = Tail ? 0x00FF : 0xFFFF;
  const __mmask16 lo = static_cast<__mmask16>(_pext_u32(w, 0x55555555u));
  const __mmask16 hi = static_cast<__mmask16>(_pext_u32(w, 0xAAAAAAAAu));
  const __m512 w01 = _mm512_mask_blend_ps(lo, _mm512_maskz_loadu_ps(keep, planes + j),
                                          _mm512_maskz_loadu_ps(keep, planes + d + j));
  const __m512 w23 = _mm512_mask_blend_ps(lo, _mm512_maskz_loadu_ps(keep, planes + 2 * d + j),
                                          _mm512_maskz_loadu_ps(keep, planes + 3 * d + j));
  return _mm512_add_ps(_mm512_maskz_loadu_ps(keep, cent + j), _mm512_mask_blend_ps(hi, w01, w23));
}
// One step with a pq table (pb, 256, 4): the 4-float codewords of the step's four packed bytes (two for the tail,
// nq = 2: the upper lanes 0) in one register; fma(level, codeword, centroid), the scalar copy's value bit for bit
// (the product is exact, see the header).
__attribute__((target("avx512f,avx2,fma,bmi2"), always_inline)) inline __m512 step_pq(
    const float* table, __m512 level, const float* cent, const uint8_t* row, int64_t j, int nq) {
  const int64_t p = j / 4;
  __m512 w = _mm512_zextps128_ps512(_mm_loadu_ps(table + ((p << 8) + row[p]) * 4));
  w = _mm512_insertf32x4(w, _mm_loadu_ps(table + (((p + 1) << 8) + row[p + 1]) * 4), 1);
  if (nq == 2) return _mm512_fmadd_ps(level, w, _mm512_maskz_loadu_ps(0x00FF, cent + j));
  w = _mm512_insertf32x4(w, _mm_loadu_ps(table + (((p + 2) << 8) + row[p + 2]) * 4), 2);
  w = _mm512_insertf32x4(w, _mm_loadu_ps(table + (((p + 3) << 8) + row[p + 3]) * 4), 3);
  return _mm512_fmadd_ps(level, w, _mm512_loadu_ps(cent + j));
}

// decode2_avx512's rows for one codec (PQ: the table and levels; else the planes), so that the codec is chosen
// once per call rather than per step.
template <bool PQ, class Code>
__attribute__((target("avx512f,avx2,fma,bmi2"), always_inline)) inline bool decode2_rows(
    const Code* codes, const uint8_t* packed, int64_t nt, const float* centroids, int64_t nlist, const float* planes,
    const float* table, const float* levels, int64_t d, float* out, float* peak, float* sq) {
  const int64_t pb = d / 4;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) return false;
    const float* cent = centroids + c * d;
    const uint8_t* row = packed + t * pb;
    float* o = out + t * d;
    const __m512 level = _mm512_set1_ps(PQ && levels != nullptr ? levels[row[pb - 1] >> 4] : 1.0f);
    __m512 m = _mm512_setzero_ps(), ss = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
      const __m512 v = PQ ? step_pq(table, level, cent, row, j, 4) : step_planes<false>(planes, d, cent, row, j);
      _mm512_storeu_ps(o + j, v);
      if (peak != nullptr) stats_step(v, m, ss);
    }
    if (j < d) {  // d % 16 == 8: the last 8 dimensions, in the low lanes (the upper ones 0)
      const __m512 v = PQ ? step_pq(table, level, cent, row, j, 2) : step_planes<true>(planes, d, cent, row, j);
      _mm512_mask_storeu_ps(o + j, 0x00FF, v);
      if (peak != nullptr) stats_step(v, m, ss);
    }
    if (peak != nullptr) stats_store(m, ss, peak, sq, t);
  }
  return true;
}

// decode_rows<2> for nbits == 2, 16 dimensions per step, for both residual codecs: planes (4, d) for the scalar
// one (weights transposed, bucket-major: blends instead of one table lookup per byte), or planes nullptr and the
// pq codec's table with its levels (nullptr: a scale of 1). Same values as decode_rows<2> bit for bit. peak and
// sq (both or neither): each row's max_j |v_j| and sum of squares (16 lanes, steps in order, then reduced), the
// int8 exact stage's quantisation statistics, gathered while the row is in registers.
template <class Code>
__attribute__((target("avx512f,avx2,fma,bmi2"))) inline bool decode2_avx512(
    const Code* codes, const uint8_t* packed, int64_t nt, const float* centroids, int64_t nlist, const float* planes,
    const float* table, const float* levels, int64_t d, float* out, float* peak = nullptr, float* sq = nullptr) {
  return planes != nullptr
             ? decode2_rows<false>(codes, packed, nt, centroids, nlist, planes, table, levels, d, out, peak, sq)
             : decode2_rows<true>(codes, packed, nt, centroids, nlist, planes, table, levels, d, out, peak, sq);
}

#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif

}  // namespace plaidx::cpu
