// dots.h: inline micro-kernels of MaxSim: running maxima of query-token scores over document tokens.
//
// Queries are used transposed, Qt (d, qp) with qp = qlen rounded up to a multiple of 8 (padding columns
// zero), so the inner loop runs across query tokens in 8- or 16-lane vectors and every dot product is
// summed sequentially over j = 0..d-1: the same value whatever the blocking or thread count.
// Running maxima use "x > m ? x : m" and visit tokens in ascending order.
//
// Thread-safety: pure functions on caller buffers.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace plaidx::cpu {

// acc[i][u] = sum_j rows[i * d + j] * cols[j * ldc + u * lanes + 0..lanes), i < T, u < NA: a register
// tile of T row vectors against NA column vectors, each sum taken over j in order from 0. R: the rows'
// element type (float, or int8_t for the quantised cell scores, each value converted exactly).
template <class V, int T, int NA, class R = float>
PLAIDX_INLINE void tile_dots(const R* rows, int64_t d, const float* cols, int64_t ldc, V (&acc)[T][NA]) {
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(float));
  for (int i = 0; i < T; ++i)
    for (int u = 0; u < NA; ++u) acc[i][u] = V{};
  const float* c = cols;
  for (int64_t j = 0; j < d; ++j, c += ldc) {
    V cv[NA];
    for (int u = 0; u < NA; ++u) cv[u] = vload_as<V>(c + u * L);
    for (int i = 0; i < T; ++i) {
      const float b = static_cast<float>(rows[i * d + j]);
      for (int u = 0; u < NA; ++u) acc[i][u] += b * cv[u];
    }
  }
}

// One tile: T document tokens (rows of v, stride d) against query columns [a, a + NA * lanes) of Qt,
// folded into the running maxima.
template <class V, int T, int NA>
PLAIDX_INLINE void dot_tile(const float* Qt, int64_t d, int64_t qp, const float* v, int64_t a,
                            float* run_max) {
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(float));
  V acc[T][NA];
  tile_dots<V, T, NA>(v, d, Qt + a, qp, acc);
  for (int u = 0; u < NA; ++u) {
    V m = vload_as<V>(run_max + a + u * L);
    for (int i = 0; i < T; ++i) m = vmax_as(m, acc[i][u]);
    vstore_as(run_max + a + u * L, m);
  }
}

// T consecutive tokens (rows of v) against every query column, in tiles of NA vectors.
template <class W, int T>
PLAIDX_INLINE void max_dots_rows(const float* Qt, int64_t d, int64_t qp, const float* v, float* run_max) {
  constexpr int64_t L = static_cast<int64_t>(sizeof(W) / sizeof(float));
  constexpr int NA = T == 1 ? 4 : 2;
  int64_t a = 0;
  for (; a + NA * L <= qp; a += NA * L) dot_tile<W, T, NA>(Qt, d, qp, v, a, run_max);
  for (; a + L <= qp; a += L) dot_tile<W, T, 1>(Qt, d, qp, v, a, run_max);
  if constexpr (L > 8)
    for (; a < qp; a += 8) dot_tile<v8f, T, 1>(Qt, d, qp, v, a, run_max);
}

// run_max[a] = max(run_max[a], max_t <V[t], Qt[:, a]>) for a in [0, qp). Qt (d, qp), V (nt, d),
// run_max (qp,). d > 0, qp a positive multiple of 8. W: the copy's vector type (4, 8 or 16 lanes).
template <class W>
PLAIDX_INLINE void max_dots(const float* Qt, int64_t d, int64_t qp, const float* V, int64_t nt,
                            float* run_max) {
  constexpr int TB = sizeof(W) == 64 ? 8 : 4;  // tokens per tile: as many accumulators as registers allow
  int64_t t = 0;
  for (; t + TB <= nt; t += TB) max_dots_rows<W, TB>(Qt, d, qp, V + t * d, run_max);
  if constexpr (TB > 4)
    for (; t + 4 <= nt; t += 4) max_dots_rows<W, 4>(Qt, d, qp, V + t * d, run_max);
  for (; t < nt; ++t) max_dots_rows<W, 1>(Qt, d, qp, V + t * d, run_max);
}

// The quantised MaxSim of kept int8 vectors (search.h: kept), generic copy. Qf (d, qp): the query's int8
// values as floats, so every sum tile_dots forms is an exact integer; each score is then
// (dot * vscale[t]) * qscale[a] (quantize.h), folded into the running maxima like dot_tile.
template <class V, int T, int NA>
PLAIDX_INLINE void dot_tile_q(const float* Qf, const float* qscale, int64_t d, int64_t qp, const int8_t* v,
                              const float* vscale, int64_t a, float* run_max) {
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(float));
  V acc[T][NA];
  tile_dots<V, T, NA, int8_t>(v, d, Qf + a, qp, acc);
  for (int u = 0; u < NA; ++u) {
    const V qs = vload_as<V>(qscale + a + u * L);
    V m = vload_as<V>(run_max + a + u * L);
    for (int i = 0; i < T; ++i) m = vmax_as(m, (vscale[i] * acc[i][u]) * qs);
    vstore_as(run_max + a + u * L, m);
  }
}

template <class W, int T>
PLAIDX_INLINE void max_dots_q_rows(const float* Qf, const float* qscale, int64_t d, int64_t qp, const int8_t* v,
                                   const float* vscale, float* run_max) {
  constexpr int64_t L = static_cast<int64_t>(sizeof(W) / sizeof(float));
  constexpr int NA = T == 1 ? 4 : 2;
  int64_t a = 0;
  for (; a + NA * L <= qp; a += NA * L) dot_tile_q<W, T, NA>(Qf, qscale, d, qp, v, vscale, a, run_max);
  for (; a + L <= qp; a += L) dot_tile_q<W, T, 1>(Qf, qscale, d, qp, v, vscale, a, run_max);
  if constexpr (L > 8)
    for (; a < qp; a += 8) dot_tile_q<v8f, T, 1>(Qf, qscale, d, qp, v, vscale, a, run_max);
}

// max_dots for int8 rows V (nt, d) with scales (nt,) against the quantised query (Qf, qscale (qp,)).
template <class W>
PLAIDX_INLINE void max_dots_q(const float* Qf, const float* qscale, int64_t d, int64_t qp, const int8_t* V,
                              const float* vscale, int64_t nt, float* run_max) {
  constexpr int TB = sizeof(W) == 64 ? 8 : 4;
  int64_t t = 0;
  for (; t + TB <= nt; t += TB) max_dots_q_rows<W, TB>(Qf, qscale, d, qp, V + t * d, vscale + t, run_max);
  for (; t < nt; ++t) max_dots_q_rows<W, 1>(Qf, qscale, d, qp, V + t * d, vscale + t, run_max);
}

// out[i * ldo + a] = <rows[i], Qt[:, a]> for i < T, a in [a0, a0 + NA * lanes), each summed over j in
// order from 0. centroid_scores tiles S with it (rows: query tokens, Qt: a panel of centroids); the
// fused search tiles St with the roles swapped (rows: centroids, Qt: the query). A product and its sum
// order do not depend on which factor is the row, so both give the same values bit for bit.
template <class V, int T, int NA, class R = float>
PLAIDX_INLINE void store_tile(const float* Qt, int64_t d, int64_t qp, const R* rows, int64_t a0, float* out,
                              int64_t ldo) {
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(float));
  V acc[T][NA];
  tile_dots<V, T, NA, R>(rows, d, Qt + a0, qp, acc);
  for (int i = 0; i < T; ++i)
    for (int u = 0; u < NA; ++u) vstore_as(out + i * ldo + a0 + u * L, acc[i][u]);
}

// out (T, ldo) = rows (T, d) against every column of Qt (d, qp): T rows' scores, a full row each, in
// register tiles of T rows x NA vectors (the default: 4 vectors for one row, 2 for several).
template <class W, int T, class R = float, int NA = (T == 1 ? 4 : 2)>
PLAIDX_INLINE void store_dots_rows(const float* Qt, int64_t d, int64_t qp, const R* rows, float* out,
                                   int64_t ldo) {
  constexpr int64_t L = static_cast<int64_t>(sizeof(W) / sizeof(float));
  int64_t a = 0;
  for (; a + NA * L <= qp; a += NA * L) store_tile<W, T, NA, R>(Qt, d, qp, rows, a, out, ldo);
  for (; a + L <= qp; a += L) store_tile<W, T, 1, R>(Qt, d, qp, rows, a, out, ldo);
  if constexpr (L > 8)
    for (; a < qp; a += 8) store_tile<v8f, T, 1, R>(Qt, d, qp, rows, a, out, ldo);
}

// Running maxima over the rows St[codes[t]] (rows of qp floats) of the tokens whose cell is kept
// (keep == nullptr keeps every cell). NV = qp / 8 vectors held in registers. Returns the number of
// tokens used, or -1 when a code is >= nlist. Code: the centroid ids' type (uint16_t or uint32_t).
template <int NV, class Code>
PLAIDX_INLINE int64_t row_max_fixed(const Code* codes, int64_t nt, const float* St, int64_t nlist,
                                    const uint8_t* keep, float* run_max) {
  constexpr int64_t qp = NV * 8;
  v8f m[NV];
  for (int u = 0; u < NV; ++u) m[u] = vload(run_max + 8 * u);
  int64_t used = 0;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) return -1;
    if (keep != nullptr && !keep[c]) continue;
    ++used;
    const float* row = St + c * qp;
    for (int u = 0; u < NV; ++u) m[u] = vmax_update(m[u], vload(row + 8 * u));
  }
  for (int u = 0; u < NV; ++u) vstore(run_max + 8 * u, m[u]);
  return used;
}

template <class Code>
PLAIDX_INLINE int64_t row_max_any(const Code* codes, int64_t nt, const float* St, int64_t nlist,
                                  int64_t qp, const uint8_t* keep, float* run_max) {
  switch (qp / 8) {
    case 1: return row_max_fixed<1>(codes, nt, St, nlist, keep, run_max);
    case 2: return row_max_fixed<2>(codes, nt, St, nlist, keep, run_max);
    case 3: return row_max_fixed<3>(codes, nt, St, nlist, keep, run_max);
    case 4: return row_max_fixed<4>(codes, nt, St, nlist, keep, run_max);
    case 5: return row_max_fixed<5>(codes, nt, St, nlist, keep, run_max);
    case 6: return row_max_fixed<6>(codes, nt, St, nlist, keep, run_max);
    case 7: return row_max_fixed<7>(codes, nt, St, nlist, keep, run_max);
    case 8: return row_max_fixed<8>(codes, nt, St, nlist, keep, run_max);
    default: break;
  }
  int64_t used = 0;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) return -1;
    if (keep != nullptr && !keep[c]) continue;
    ++used;
    const float* row = St + c * qp;
    for (int64_t a = 0; a < qp; a += 8) vstore(run_max + a, vmax_update(vload(run_max + a), vload(row + a)));
  }
  return used;
}

// row_max_fixed over every token into full and over the kept ones into pruned, in one pass (each row
// read once). Same values as two row_max_fixed calls. Returns the number of kept tokens, or -1 when a
// code is >= nlist.
template <int NV, class Code>
PLAIDX_INLINE int64_t row_max_both_fixed(const Code* codes, int64_t nt, const float* St, int64_t nlist,
                                      const uint8_t* keep, float* pruned, float* full) {
  constexpr int64_t qp = NV * 8;
  v8f p[NV], f[NV];
  for (int u = 0; u < NV; ++u) {
    p[u] = vload(pruned + 8 * u);
    f[u] = vload(full + 8 * u);
  }
  int64_t used = 0;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) return -1;
    const float* row = St + c * qp;
    if (keep[c]) {
      ++used;
      for (int u = 0; u < NV; ++u) {
        const v8f x = vload(row + 8 * u);
        p[u] = vmax_update(p[u], x);
        f[u] = vmax_update(f[u], x);
      }
    } else {
      for (int u = 0; u < NV; ++u) f[u] = vmax_update(f[u], vload(row + 8 * u));
    }
  }
  for (int u = 0; u < NV; ++u) {
    vstore(pruned + 8 * u, p[u]);
    vstore(full + 8 * u, f[u]);
  }
  return used;
}

template <class Code>
PLAIDX_INLINE int64_t row_max_both_any(const Code* codes, int64_t nt, const float* St, int64_t nlist, int64_t qp,
                                    const uint8_t* keep, float* pruned, float* full) {
  switch (qp / 8) {
    case 1: return row_max_both_fixed<1>(codes, nt, St, nlist, keep, pruned, full);
    case 2: return row_max_both_fixed<2>(codes, nt, St, nlist, keep, pruned, full);
    case 3: return row_max_both_fixed<3>(codes, nt, St, nlist, keep, pruned, full);
    case 4: return row_max_both_fixed<4>(codes, nt, St, nlist, keep, pruned, full);
    case 5: return row_max_both_fixed<5>(codes, nt, St, nlist, keep, pruned, full);
    case 6: return row_max_both_fixed<6>(codes, nt, St, nlist, keep, pruned, full);
    case 7: return row_max_both_fixed<7>(codes, nt, St, nlist, keep, pruned, full);
    case 8: return row_max_both_fixed<8>(codes, nt, St, nlist, keep, pruned, full);
    default: break;
  }
  int64_t used = 0;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t c = codes[t];
    if (c >= nlist) return -1;
    const float* row = St + c * qp;
    used += keep[c] ? 1 : 0;
    for (int64_t a = 0; a < qp; a += 8) {
      const v8f x = vload(row + a);
      if (keep[c]) vstore(pruned + a, vmax_update(vload(pruned + a), x));
      vstore(full + a, vmax_update(vload(full + a), x));
    }
  }
  return used;
}

// sum_{a < qlen} m[a], accumulated sequentially in float (the reference order).
PLAIDX_INLINE float sum_first(const float* m, int64_t qlen) {
  float s = 0.0f;
  for (int64_t a = 0; a < qlen; ++a) s += m[a];
  return s;
}

}  // namespace plaidx::cpu
