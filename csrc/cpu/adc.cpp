// adc.cpp: the lookup-table exact stage and the token scales it reads (see adc.h).
#include "cpu/adc.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu/parallel.h"
#include "cpu/quantize.h"
#include "cpu/simd.h"

namespace plaidx::cpu {
namespace {

template <int DPB>
PLAIDX_INLINE void table_rows(const float* Qt, int64_t qc, const float* table, const float* inv, int64_t p0,
                              int64_t p1, int8_t* lut) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* q = Qt + p * DPB * qc;
    for (int64_t b = 0; b < 256; ++b) {
      const float* w = table + (p * 256 + b) * DPB;
      int8_t* o = lut + (p * 256 + b) * qc;
      for (int64_t a = 0; a < qc; ++a) {
        float s = q[a] * w[0];
        for (int u = 1; u < DPB; ++u) s += q[u * qc + a] * w[u];
        o[a] = static_cast<int8_t>(round_small(s * inv[a]));
      }
    }
  }
}

template <Isa I>
PLAIDX_INLINE void table_rows_any_impl(const float* Qt, int64_t qc, const float* table, int64_t d, int nbits,
                                       const float* inv, int64_t p0, int64_t p1, int8_t* lut) {
  (void)d;
  switch (nbits) {
    case 1: table_rows<8>(Qt, qc, table, inv, p0, p1, lut); break;
    case 2: table_rows<4>(Qt, qc, table, inv, p0, p1, lut); break;
    case 4: table_rows<2>(Qt, qc, table, inv, p0, p1, lut); break;
    default: table_rows<1>(Qt, qc, table, inv, p0, p1, lut); break;
  }
}
PLAIDX_DISPATCH(void, table_rows_any,
                (const float* Qt, int64_t qc, const float* table, int64_t d, int nbits, const float* inv, int64_t p0,
                 int64_t p1, int8_t* lut),
                (Qt, qc, table, d, nbits, inv, p0, p1, lut))

#if defined(__GNUC__)
typedef int16_t v32h __attribute__((vector_size(64)));
typedef int16_t v16h __attribute__((vector_size(32)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v16x __attribute__((vector_size(64)));

typedef int8_t v32c __attribute__((vector_size(32)));
// 32 int8 table entries widened to int16 (one vpmovsxbw with AVX-512BW).
PLAIDX_INLINE v32h load_h(const int8_t* p) {
  v32c r;
  std::memcpy(&r, p, sizeof(r));
  return __builtin_convertvector(r, v32h);
}
PLAIDX_INLINE v16x load_f(const float* p) {
  v16x r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}

constexpr int64_t kAdcAhead = 8;  // tokens ahead whose cell-score row is prefetched

// Asks the cache for columns [g, g + 32) of the cell-score row of token t + kAdcAhead (a random row of St, often
// past L2), while token t is scored; nothing past hi or for a code >= nlist (adc_max reports those).
template <class Code>
PLAIDX_INLINE void prefetch_cell_row(const Compressed<Code>& col, const float* St, int64_t qp, int64_t g, int64_t t,
                                     int64_t hi) {
  if (t + kAdcAhead >= hi) return;
  const int64_t c = col.codes[t + kAdcAhead];
  if (c < col.nlist) __builtin_prefetch(St + c * qp + g), __builtin_prefetch(St + c * qp + g + 16);
}

// One 32-column group [g, g + 32) of adc_max.
template <class Code>
PLAIDX_INLINE bool adc_group(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
                             const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi, int64_t g,
                             float* run_max) {
  const int64_t pb = col.d * col.nbits / 8;
  const int8_t* L = lut + g;
  const v16x u0 = load_f(u + g), u1 = load_f(u + g + 16);
  v16x m0 = load_f(run_max + g), m1 = load_f(run_max + g + 16);
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t c = col.codes[t];
    if (c >= col.nlist) return false;
    prefetch_cell_row(col, St, qp, g, t, hi);
    const uint8_t* row = col.packed + t * pb;
    // two independent chains of additions; every partial sum is bounded like the whole (adc.h)
    v32h a0 = load_h(L + static_cast<int64_t>(row[0]) * qc);
    v32h a1 = v32h{};
    int64_t p = 1;
    for (; p + 2 <= pb; p += 2) {
      a0 += load_h(L + ((p << 8) + row[p]) * qc);
      a1 += load_h(L + (((p + 1) << 8) + row[p + 1]) * qc);
    }
    if (p < pb) a0 += load_h(L + ((p << 8) + row[p]) * qc);
    const v32h acc = a0 + a1;
    const v16h h0 = __builtin_shufflevector(acc, acc, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const v16h h1 = __builtin_shufflevector(acc, acc, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
    const v16x f0 = __builtin_convertvector(__builtin_convertvector(h0, v16i), v16x);
    const v16x f1 = __builtin_convertvector(__builtin_convertvector(h1, v16i), v16x);
    const float s = col.levels != nullptr ? col.levels[row[pb - 1] >> 4] : 1.0f;
    const float n = half_to_float(scales[t]);
    const float* sc = St + c * qp + g;
    const v16x x0 = ((f0 * u0) * s + load_f(sc)) * n;
    const v16x x1 = ((f1 * u1) * s + load_f(sc + 16)) * n;
    m0 = vmax_as(m0, x0);
    m1 = vmax_as(m1, x1);
  }
  std::memcpy(run_max + g, &m0, sizeof(m0));
  std::memcpy(run_max + g + 16, &m1, sizeof(m1));
  return true;
}
#else
template <class Code>
bool adc_group(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
               const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi, int64_t g,
               float* run_max) {
  const int64_t pb = col.d * col.nbits / 8;
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t c = col.codes[t];
    if (c >= col.nlist) return false;
    const uint8_t* row = col.packed + t * pb;
    const float s = col.levels != nullptr ? col.levels[row[pb - 1] >> 4] : 1.0f;
    const float n = half_to_float(scales[t]);
    for (int64_t a = g; a < g + 32; ++a) {
      int32_t acc = 0;
      for (int64_t p = 0; p < pb; ++p) acc += lut[((p << 8) + row[p]) * qc + a];
      const float x = ((static_cast<float>(acc) * u[a]) * s + St[c * qp + a]) * n;
      if (x > run_max[a]) run_max[a] = x;
    }
  }
  return true;
}
#endif

// group(g) over the 32-column groups of qc columns; false as soon as one reports a code >= nlist.
template <class Group>
PLAIDX_INLINE bool over_groups(int64_t qc, Group&& group) {
  for (int64_t g = 0; g < qc; g += 32)
    if (!group(g)) return false;
  return true;
}

template <Isa I, class Code>
PLAIDX_INLINE bool adc_max_any_impl(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
                                    const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi,
                                    float* run_max) {
  for (int64_t g = 0; g < qc; g += 32)  // (a loop, not over_groups: a lambda would not take this copy's target)
    if (!adc_group(lut, qc, u, St, qp, col, scales, lo, hi, g, run_max)) return false;
  return true;
}
PLAIDX_DISPATCH_CODE(bool, adc_max_any,
                     (const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
                      const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi, float* run_max),
                     (lut, qc, u, St, qp, col, scales, lo, hi, run_max))

// The AVX-512BW copy, in intrinsics: one widening load (vpmovsxbw) and one 32-lane addition per packed byte,
// the float part in two 16-lane halves, each operation rounded on its own (the reference's values bit for bit;
// the generic copies may fuse a multiply and an add).
#if defined(__GNUC__) && defined(__x86_64__)
#define PLAIDX_HAVE_ADC_INTRINSICS 1
#define PLAIDX_ADC_BW __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
PLAIDX_ADC_BW inline __m512i entries(const int8_t* p) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

template <class Code>
PLAIDX_ADC_BW bool adc_group_bw(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
                                const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi,
                                int64_t g, float* run_max) {
  const int64_t pb = col.d * col.nbits / 8;
  const int8_t* L = lut + g;
  const __m512 u0 = _mm512_loadu_ps(u + g), u1 = _mm512_loadu_ps(u + g + 16);
  __m512 m0 = _mm512_loadu_ps(run_max + g), m1 = _mm512_loadu_ps(run_max + g + 16);
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t c = col.codes[t];
    if (c >= col.nlist) return false;
    prefetch_cell_row(col, St, qp, g, t, hi);
    const uint8_t* row = col.packed + t * pb;
    __m512i a0 = entries(L + static_cast<int64_t>(row[0]) * qc), a1 = _mm512_setzero_si512();
    int64_t p = 1;
    for (; p + 2 <= pb; p += 2) {
      a0 = _mm512_add_epi16(a0, entries(L + ((p << 8) + row[p]) * qc));
      a1 = _mm512_add_epi16(a1, entries(L + (((p + 1) << 8) + row[p + 1]) * qc));
    }
    if (p < pb) a0 = _mm512_add_epi16(a0, entries(L + ((p << 8) + row[p]) * qc));
    const __m512i acc = _mm512_add_epi16(a0, a1);
    const __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc)));
    const __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(acc, 1)));
    const __m512 s = _mm512_set1_ps(col.levels != nullptr ? col.levels[row[pb - 1] >> 4] : 1.0f);
    const __m512 n = _mm512_set1_ps(half_to_float(scales[t]));
    const float* sc = St + c * qp + g;
    const __m512 x0 = _mm512_mul_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(f0, u0), s), _mm512_loadu_ps(sc)), n);
    const __m512 x1 =
        _mm512_mul_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(f1, u1), s), _mm512_loadu_ps(sc + 16)), n);
    m0 = _mm512_mask_mov_ps(m0, _mm512_cmp_ps_mask(x0, m0, _CMP_GT_OQ), x0);
    m1 = _mm512_mask_mov_ps(m1, _mm512_cmp_ps_mask(x1, m1, _CMP_GT_OQ), x1);
  }
  _mm512_storeu_ps(run_max + g, m0);
  _mm512_storeu_ps(run_max + g + 16, m1);
  return true;
}

template <class Code>
PLAIDX_ADC_BW bool adc_max_avx512bw(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
                                    const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi,
                                    float* run_max) {
  return over_groups(qc, [&](int64_t g) {
    return adc_group_bw(lut, qc, u, St, qp, col, scales, lo, hi, g, run_max);
  });
}

// table_rows in intrinsics: 16 columns per step, the products summed in order, each operation rounded on its own
// (no fused multiply-add: the reference's values), rounded to nearest even by the conversion.
template <int DPB>
PLAIDX_ADC_BW void table_rows_bw(const float* Qt, int64_t qc, const float* table, const float* inv, int64_t p0,
                                 int64_t p1, int8_t* lut) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* q = Qt + p * DPB * qc;
    for (int64_t a = 0; a < qc; a += 16) {
      __m512 qv[DPB];
      for (int v = 0; v < DPB; ++v) qv[v] = _mm512_loadu_ps(q + v * qc + a);
      const __m512 iv = _mm512_loadu_ps(inv + a);
      for (int64_t b = 0; b < 256; ++b) {
        const float* w = table + (p * 256 + b) * DPB;
        __m512 x = _mm512_mul_ps(qv[0], _mm512_set1_ps(w[0]));
        for (int v = 1; v < DPB; ++v) x = _mm512_add_ps(x, _mm512_mul_ps(qv[v], _mm512_set1_ps(w[v])));
        const __m128i e = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x, iv)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(lut + (p * 256 + b) * qc + a), e);
      }
    }
  }
}

inline bool have_avx512bw() {
  static const bool ok = runtime_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bw");
  return ok;
}

// The AVX2 copies, in intrinsics (the generic vectors compile the widening loads poorly there): the 32 columns in
// two halves of 16 int16 lanes, the float part in four 8-lane quarters, each operation rounded on its own.
#define PLAIDX_ADC_AVX2 __attribute__((target("avx2,fma")))
PLAIDX_ADC_AVX2 inline __m256i entries16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// run_max[g + 8 i, + 8) for i in 0..3 from the two int16 halves (columns 0-15, 16-31).
PLAIDX_ADC_AVX2 inline void float_quarters(__m256i lo, __m256i hi, const float* u, float s, const float* sc, float n,
                                           __m256* m) {
  const __m256i q[4] = {_mm256_cvtepi16_epi32(_mm256_castsi256_si128(lo)),
                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(lo, 1)),
                        _mm256_cvtepi16_epi32(_mm256_castsi256_si128(hi)),
                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(hi, 1))};
  const __m256 sv = _mm256_set1_ps(s), nv = _mm256_set1_ps(n);
  for (int i = 0; i < 4; ++i) {
    const __m256 f = _mm256_cvtepi32_ps(q[i]);
    const __m256 x = _mm256_mul_ps(
        _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(f, _mm256_loadu_ps(u + 8 * i)), sv), _mm256_loadu_ps(sc + 8 * i)),
        nv);
    m[i] = _mm256_blendv_ps(m[i], x, _mm256_cmp_ps(x, m[i], _CMP_GT_OQ));
  }
}

template <class Code>
PLAIDX_ADC_AVX2 bool adc_group_avx2(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
                                    const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi,
                                    int64_t g, float* run_max) {
  const int64_t pb = col.d * col.nbits / 8;
  const int8_t* L = lut + g;
  __m256 m[4];
  for (int i = 0; i < 4; ++i) m[i] = _mm256_loadu_ps(run_max + g + 8 * i);
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t c = col.codes[t];
    if (c >= col.nlist) return false;
    prefetch_cell_row(col, St, qp, g, t, hi);
    const uint8_t* row = col.packed + t * pb;
    const int8_t* e = L + static_cast<int64_t>(row[0]) * qc;
    __m256i alo = entries16(e), ahi = entries16(e + 16);
    for (int64_t p = 1; p < pb; ++p) {
      e = L + ((p << 8) + row[p]) * qc;
      alo = _mm256_add_epi16(alo, entries16(e));
      ahi = _mm256_add_epi16(ahi, entries16(e + 16));
    }
    float_quarters(alo, ahi, u + g, col.levels != nullptr ? col.levels[row[pb - 1] >> 4] : 1.0f, St + c * qp + g,
                   half_to_float(scales[t]), m);
  }
  for (int i = 0; i < 4; ++i) _mm256_storeu_ps(run_max + g + 8 * i, m[i]);
  return true;
}

template <class Code>
PLAIDX_ADC_AVX2 bool adc_max_avx2(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp,
                                  const Compressed<Code>& col, const uint16_t* scales, int64_t lo, int64_t hi,
                                  float* run_max) {
  return over_groups(qc, [&](int64_t g) {
    return adc_group_avx2(lut, qc, u, St, qp, col, scales, lo, hi, g, run_max);
  });
}

// table_rows in AVX2 intrinsics: 8 columns per step, as table_rows_bw.
template <int DPB>
PLAIDX_ADC_AVX2 void table_rows_avx2(const float* Qt, int64_t qc, const float* table, const float* inv, int64_t p0,
                                     int64_t p1, int8_t* lut) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* q = Qt + p * DPB * qc;
    for (int64_t a = 0; a < qc; a += 8) {
      __m256 qv[DPB];
      for (int v = 0; v < DPB; ++v) qv[v] = _mm256_loadu_ps(q + v * qc + a);
      const __m256 iv = _mm256_loadu_ps(inv + a);
      for (int64_t b = 0; b < 256; ++b) {
        const float* w = table + (p * 256 + b) * DPB;
        __m256 x = _mm256_mul_ps(qv[0], _mm256_set1_ps(w[0]));
        for (int v = 1; v < DPB; ++v) x = _mm256_add_ps(x, _mm256_mul_ps(qv[v], _mm256_set1_ps(w[v])));
        const __m256i i32 = _mm256_cvtps_epi32(_mm256_mul_ps(x, iv));  // in [-127, 127]: the packs never saturate
        const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(lut + (p * 256 + b) * qc + a), _mm_packs_epi16(i16, i16));
      }
    }
  }
}

inline bool have_avx2() {
  static const bool ok = runtime_isa() != Isa::kBase;  // avx2 and fma (runtime_isa's own check)
  return ok;
}
#else
#define PLAIDX_HAVE_ADC_INTRINSICS 0
#endif

// adc_table_peaks, one sub-vector's 256 * dpb entries at a time in 16 lanes (lane l holds dimension l % dpb, as dpb
// divides 16), so that each copy takes 16 entries per vector operation: it runs on every search call.
template <Isa I>
PLAIDX_INLINE void table_peaks_impl(const float* table, int64_t pb, int64_t dpb, float* peak) {
  for (int64_t p = 0; p < pb; ++p) {
    const float* x = table + p * 256 * dpb;
    float m[16] = {};
    for (int64_t i = 0; i < 256 * dpb; i += 16)
      for (int l = 0; l < 16; ++l) {
        const float a = std::fabs(x[i + l]);
        m[l] = a > m[l] ? a : m[l];
      }
    for (int64_t v = 0; v < dpb; ++v) {
      float best = 0.0f;
      for (int64_t l = v; l < 16; l += dpb) best = m[l] > best ? m[l] : best;
      peak[p * dpb + v] = best;
    }
  }
}
PLAIDX_DISPATCH(void, table_peaks, (const float* table, int64_t pb, int64_t dpb, float* peak),
                (table, pb, dpb, peak))
}  // namespace

void adc_table_peaks(const float* table, int64_t d, int nbits, float* peak) {
  table_peaks(table, d * nbits / 8, 8 / nbits, peak);
}

void adc_query_scales(const float* Q, int64_t qlen, int64_t d, int nbits, const float* peak, int64_t qc,
                      float* inv, float* u) {
  const int64_t dpb = 8 / nbits, pb = d / dpb;
  const float top = adc_entry_peak(pb);
  for (int64_t a = 0; a < qc; ++a) {
    float bound = 0.0f;
    if (a < qlen)
      for (int64_t p = 0; p < pb; ++p) {
        float s = 0.0f;
        for (int64_t v = 0; v < dpb; ++v) s += std::fabs(Q[a * d + p * dpb + v]) * peak[p * dpb + v];
        bound = std::max(bound, s);
      }
    inv[a] = bound > 0.0f ? top / bound : 0.0f;
    u[a] = bound / top;
  }
}

void adc_table_rows(const float* Qt, int64_t qc, const float* table, int64_t d, int nbits, const float* inv,
                    int64_t p0, int64_t p1, int8_t* lut) {
#if PLAIDX_HAVE_ADC_INTRINSICS
  if (have_avx512bw()) {
    switch (nbits) {
      case 1: table_rows_bw<8>(Qt, qc, table, inv, p0, p1, lut); return;
      case 2: table_rows_bw<4>(Qt, qc, table, inv, p0, p1, lut); return;
      case 4: table_rows_bw<2>(Qt, qc, table, inv, p0, p1, lut); return;
      default: table_rows_bw<1>(Qt, qc, table, inv, p0, p1, lut); return;
    }
  }
  if (have_avx2()) {
    switch (nbits) {
      case 1: table_rows_avx2<8>(Qt, qc, table, inv, p0, p1, lut); return;
      case 2: table_rows_avx2<4>(Qt, qc, table, inv, p0, p1, lut); return;
      case 4: table_rows_avx2<2>(Qt, qc, table, inv, p0, p1, lut); return;
      default: table_rows_avx2<1>(Qt, qc, table, inv, p0, p1, lut); return;
    }
  }
#endif
  table_rows_any(Qt, qc, table, d, nbits, inv, p0, p1, lut);
}

template <class Code>
bool adc_max(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp, const Compressed<Code>& col,
             const uint16_t* scales, int64_t lo, int64_t hi, float* run_max) {
#if PLAIDX_HAVE_ADC_INTRINSICS
  if (have_avx512bw()) return adc_max_avx512bw(lut, qc, u, St, qp, col, scales, lo, hi, run_max);
  if (have_avx2()) return adc_max_avx2(lut, qc, u, St, qp, col, scales, lo, hi, run_max);
#endif
  return adc_max_any(lut, qc, u, St, qp, col, scales, lo, hi, run_max);
}

const char* adc_kernel_copy() {
#if PLAIDX_HAVE_ADC_INTRINSICS
  if (have_avx512bw()) return "avx512bw";
  if (have_avx2()) return "avx2";
#endif
  return "generic";
}

namespace {

constexpr int64_t kScaleBlock = 256;  // tokens decoded at a time for their inverse norms

// out[i] = the inverse norm of token t + i of col, for i < nt (nt <= kScaleBlock); buf (kScaleBlock, d) scratch.
template <class Code>
void inverse_norms(const Compressed<Code>& col, int64_t t, int64_t nt, float* buf, float* out) {
  const int64_t d = col.d;
  decode_tokens(col, t, nt, buf);
  for (int64_t i = 0; i < nt; ++i) {
    const float* v = buf + i * d;
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = 0; j < d; j += 8)
      for (int l = 0; l < 8; ++l) s[l] += v[j + l] * v[j + l];
    const float total = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    const float norm = std::sqrt(total);
    out[i] = 1.0f / (norm < kAdcMinNorm ? kAdcMinNorm : norm);
  }
}

}  // namespace

template <class Code>
void token_scales(const Compressed<Code>& col, float* out, int num_threads) {
  const int threads = threads_for(col.n, int64_t{1} << 14, resolve_threads(num_threads));
  parallel_chunks(col.n, std::max<int64_t>(kScaleBlock, grain_for(col.n, threads, 4)), threads,
                  [&](int64_t b, int64_t e) {
                    std::vector<float> buf(static_cast<size_t>(kScaleBlock * col.d));
                    for (int64_t t = b; t < e; t += kScaleBlock)
                      inverse_norms(col, t, std::min(kScaleBlock, e - t), buf.data(), out + t);
                  });
}

uint16_t float_to_half_bits(float x) {
  uint32_t f;
  std::memcpy(&f, &x, sizeof f);
  const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
  const uint32_t a = f & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // infinity, or NaN: the payload's top 10 bits (at least one set)
    const uint32_t payload = (a & 0x007fffffu) >> 13;
    return static_cast<uint16_t>(sign | 0x7c00u | (a == 0x7f800000u ? 0u : payload != 0u ? payload : 1u));
  }
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // from 65520 up: rounds to infinity
  uint32_t h, rem, half;
  if (a >= 0x38800000u) {  // a normal float16: rebias the exponent, keep 10 bits of the significand
    h = (a - 0x38000000u) >> 13;
    rem = a & 0x1fffu;
    half = 0x1000u;
  } else {  // a subnormal float16 (or zero): the value in units of 2^-24
    if (a <= 0x33000000u) return sign;  // up to 2^-25, the tie, rounds to zero
    const uint32_t shift = 126u - (a >> 23);  // 14..24
    const uint32_t m = (a & 0x007fffffu) | 0x00800000u;
    h = m >> shift;
    rem = m & ((1u << shift) - 1u);
    half = 1u << (shift - 1u);
  }
  if (rem > half || (rem == half && (h & 1u))) ++h;  // a carry into the exponent is the right result
  return static_cast<uint16_t>(sign | h);
}

template <class Code>
void fill_token_scales(const Compressed<Code>& col, uint16_t* scales, uint8_t* done, const int64_t* docs,
                       int64_t count, int num_threads) {
  std::vector<int64_t> todo;
  int64_t tokens = 0;
  for (int64_t i = 0; i < count; ++i)
    if (__atomic_load_n(done + docs[i], __ATOMIC_ACQUIRE) == 0) {
      todo.push_back(docs[i]);
      tokens += col.doc_offsets[docs[i] + 1] - col.doc_offsets[docs[i]];
    }
  if (todo.empty()) return;
  const int64_t m = static_cast<int64_t>(todo.size());
  const int threads = threads_for(tokens, int64_t{1} << 13, resolve_threads(num_threads));
  parallel_chunks(
      m, std::max<int64_t>(1, grain_for(m, threads, 8)), threads,
      [&](int64_t b, int64_t e) {
        std::vector<float> buf(static_cast<size_t>(kScaleBlock * col.d)), inv(static_cast<size_t>(kScaleBlock));
        for (int64_t i = b; i < e; ++i) {
          const int64_t doc = todo[i], hi = col.doc_offsets[doc + 1];
          for (int64_t t = col.doc_offsets[doc]; t < hi; t += kScaleBlock) {
            const int64_t nt = std::min(kScaleBlock, hi - t);
            inverse_norms(col, t, nt, buf.data(), inv.data());
            for (int64_t j = 0; j < nt; ++j)
              __atomic_store_n(scales + t + j, float_to_half_bits(inv[j]), __ATOMIC_RELAXED);
          }
          __atomic_store_n(done + doc, uint8_t{1}, __ATOMIC_RELEASE);
        }
      },
      Schedule::kDynamic);
}

template bool adc_max<uint16_t>(const int8_t*, int64_t, const float*, const float*, int64_t,
                                const Compressed<uint16_t>&, const uint16_t*, int64_t, int64_t, float*);
template bool adc_max<uint32_t>(const int8_t*, int64_t, const float*, const float*, int64_t,
                                const Compressed<uint32_t>&, const uint16_t*, int64_t, int64_t, float*);
template void token_scales<uint16_t>(const Compressed<uint16_t>&, float*, int);
template void token_scales<uint32_t>(const Compressed<uint32_t>&, float*, int);
template void fill_token_scales<uint16_t>(const Compressed<uint16_t>&, uint16_t*, uint8_t*, const int64_t*,
                                          int64_t, int);
template void fill_token_scales<uint32_t>(const Compressed<uint32_t>&, uint16_t*, uint8_t*, const int64_t*,
                                          int64_t, int);

}  // namespace plaidx::cpu
