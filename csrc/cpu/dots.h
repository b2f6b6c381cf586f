// dots.h: inline micro-kernels of MaxSim: running maxima of query-token scores over document tokens.
//
// Queries are used transposed, Qt (d, qp) with qp = qlen rounded up to a multiple of 8 (padding columns
// zero), so the inner loop runs across query tokens in 8-lane vectors and every dot product is summed
// sequentially over j = 0..d-1: the same value whatever the blocking, thread count or SIMD clone.
// Running maxima use "x > m ? x : m" and visit tokens in ascending order.
//
// Thread-safety: pure functions on caller buffers.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace plaidx::cpu {

// run_max[a] = max(run_max[a], max_t <V[t], Qt[:, a]>) for a in [0, qp). Qt (d, qp), V (nt, d),
// run_max (qp,). d > 0, qp a positive multiple of 8.
PLAIDX_INLINE void max_dots(const float* Qt, int64_t d, int64_t qp, const float* V, int64_t nt,
                            float* run_max) {
  int64_t t = 0;
  for (; t + 4 <= nt; t += 4) {
    const float* v0 = V + t * d;
    const float* v1 = v0 + d;
    const float* v2 = v1 + d;
    const float* v3 = v2 + d;
    int64_t a = 0;
    for (; a + 16 <= qp; a += 16) {
      v8f c00 = vzero(), c01 = vzero(), c10 = vzero(), c11 = vzero();
      v8f c20 = vzero(), c21 = vzero(), c30 = vzero(), c31 = vzero();
      const float* q = Qt + a;
      for (int64_t j = 0; j < d; ++j, q += qp) {
        const v8f q0 = vload(q), q1 = vload(q + 8);
        float b = v0[j];
        c00 += b * q0;
        c01 += b * q1;
        b = v1[j];
        c10 += b * q0;
        c11 += b * q1;
        b = v2[j];
        c20 += b * q0;
        c21 += b * q1;
        b = v3[j];
        c30 += b * q0;
        c31 += b * q1;
      }
      v8f m0 = vload(run_max + a), m1 = vload(run_max + a + 8);
      m0 = vmax_update(vmax_update(vmax_update(vmax_update(m0, c00), c10), c20), c30);
      m1 = vmax_update(vmax_update(vmax_update(vmax_update(m1, c01), c11), c21), c31);
      vstore(run_max + a, m0);
      vstore(run_max + a + 8, m1);
    }
    for (; a < qp; a += 8) {
      v8f c0 = vzero(), c1 = vzero(), c2 = vzero(), c3 = vzero();
      const float* q = Qt + a;
      for (int64_t j = 0; j < d; ++j, q += qp) {
        const v8f q0 = vload(q);
        c0 += v0[j] * q0;
        c1 += v1[j] * q0;
        c2 += v2[j] * q0;
        c3 += v3[j] * q0;
      }
      v8f m0 = vload(run_max + a);
      m0 = vmax_update(vmax_update(vmax_update(vmax_update(m0, c0), c1), c2), c3);
      vstore(run_max + a, m0);
    }
  }
  for (; t < nt; ++t) {
    const float* v0 = V + t * d;
    int64_t a = 0;
    for (; a + 32 <= qp; a += 32) {
      v8f c0 = vzero(), c1 = vzero(), c2 = vzero(), c3 = vzero();
      const float* q = Qt + a;
      for (int64_t j = 0; j < d; ++j, q += qp) {
        const float b = v0[j];
        c0 += b * vload(q);
        c1 += b * vload(q + 8);
        c2 += b * vload(q + 16);
        c3 += b * vload(q + 24);
      }
      vstore(run_max + a, vmax_update(vload(run_max + a), c0));
      vstore(run_max + a + 8, vmax_update(vload(run_max + a + 8), c1));
      vstore(run_max + a + 16, vmax_update(vload(run_max + a + 16), c2));
      vstore(run_max + a + 24, vmax_update(vload(run_max + a + 24), c3));
    }
    for (; a < qp; a += 8) {
      v8f c0 = vzero();
      const float* q = Qt + a;
      for (int64_t j = 0; j < d; ++j, q += qp) c0 += v0[j] * vload(q);
      vstore(run_max + a, vmax_update(vload(run_max + a), c0));
    }
  }
}

// Running maxima over the rows St[codes[t]] (rows of qp floats) of the tokens whose cell is kept
// (keep == nullptr keeps every cell). NV = qp / 8 vectors held in registers. Returns the number of
// tokens used, or -1 when a code is >= nlist.
template <int NV>
PLAIDX_INLINE int64_t row_max_fixed(const uint16_t* codes, int64_t nt, const float* St, int64_t nlist,
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

PLAIDX_INLINE int64_t row_max_any(const uint16_t* codes, int64_t nt, const float* St, int64_t nlist,
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

// sum_{a < qlen} m[a], accumulated sequentially in float (the reference order).
PLAIDX_INLINE float sum_first(const float* m, int64_t qlen) {
  float s = 0.0f;
  for (int64_t a = 0; a < qlen; ++a) s += m[a];
  return s;
}

}  // namespace plaidx::cpu
