// assign.cpp: grouped nearest-centroid assignment (see assign.h).
#include "cpu/assign.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cpu/dots.h"
#include "cpu/parallel.h"
#include "cpu/quantize.h"
#include "cpu/simd.h"
#include "cpu/vnni.h"

namespace plaidx::cpu {
namespace {

constexpr int kMaxRows = 6;       // tokens per register tile, at most
// Tokens bucketed together, so that a group's panel serves several at once: kChunk, or kWideChunk where the
// panels are larger than the caches (kWidePanels floats and up; 2^18 centroids of d 128 take 128 MiB), so
// that each panel is read from memory once for about 64 tokens instead of 16.
constexpr int64_t kChunk = 2048;
constexpr int64_t kWideChunk = 8192;
constexpr int64_t kWidePanels = int64_t{8} << 20;
constexpr int kBlock = 16;        // coarse scores tested against the probe list's threshold at once

// max over c < width of v[c] + mask[c] (mask: 0 on a real column, -inf on padding), -inf when width has none.
template <class W>
PLAIDX_INLINE float masked_max(const float* v, const float* mask, int64_t width) {
  constexpr int64_t L = static_cast<int64_t>(sizeof(W) / sizeof(float));
  float m = -std::numeric_limits<float>::infinity();
  int64_t c = 0;
  if (width >= L) {
    W acc = vload_as<W>(v) + vload_as<W>(mask);
    for (c = L; c + L <= width; c += L) acc = vmax_as(acc, vload_as<W>(v + c) + vload_as<W>(mask + c));
    float lanes[L];
    vstore_as(lanes, acc);
    for (int64_t l = 0; l < L; ++l) m = lanes[l] > m ? lanes[l] : m;
  }
  for (; c < width; ++c) {
    const float x = v[c] + mask[c];
    m = x > m ? x : m;
  }
  return m;
}

// Scratch of one thread.
struct Scratch {
  std::vector<float> cs;       // (kMaxRows, gp) coarse scores
  std::vector<int64_t> top_g;  // (chunk, nprobe) probed groups
  std::vector<float> top_s;    // (nprobe,)
  std::vector<int64_t> count;  // (G + 1,) bucket starts
  std::vector<int32_t> pairs;  // (chunk * nprobe,) tokens, bucketed by group
  std::vector<float> rows;     // (kMaxRows, d) gathered tokens
  std::vector<float> dots;     // (kMaxRows, widest)
  std::vector<float> best;     // (chunk,)
  std::vector<uint32_t> bid;   // (chunk,)
  // the int8 candidate scores (AssignInt8) only
  std::vector<int8_t> xq;        // (chunk, d) the tokens' int8 values, then + 128 (vpdpbusd's unsigned operand)
  std::vector<float> xs;         // (chunk,) their scales
  std::vector<float> x2;         // (chunk,) their squared norms
  std::vector<uint8_t> tile;     // (kMaxRows, d) gathered int8 tokens (+ 128)
  std::vector<int64_t> cand;     // (max(G, widest),) columns within the margin
  std::vector<const float*> crow;  // (max(G, widest),) rows to score in float32
  std::vector<float> exact;      // (max(G, widest),) their float32 scores
  std::vector<int64_t> keep;     // (G,) the probe list's boundary groups
  // each token's centroids that may still be its nearest (kList at most): approximate score, its margin, id
  std::vector<float> lb;         // (chunk,) the largest approximate score minus its margin so far
  std::vector<int32_t> nlist;    // (chunk,) entries in its list
  std::vector<float> la, le;     // (chunk, kList)
  std::vector<uint32_t> lid;     // (chunk, kList)
};

constexpr int kList = 16;  // candidates a token carries across its groups before they are scored in float32

// The nprobe best groups offered so far into top_g (scores in top_s), best first: a later group enters only
// with a strictly higher score (ties: the lower group, groups being offered in ascending order).
struct ProbeList {
  float* top_s;
  int64_t* top_g;
  int64_t n;
  int64_t count = 0;
  PLAIDX_INLINE void offer(int64_t g, float v) {
    if (count == n && !(v > top_s[count - 1])) return;
    int64_t pos = count < n ? count : n - 1;
    while (pos > 0 && v > top_s[pos - 1]) {
      top_s[pos] = top_s[pos - 1];
      top_g[pos] = top_g[pos - 1];
      --pos;
    }
    top_s[pos] = v;
    top_g[pos] = g;
    if (count < n) ++count;
  }
  PLAIDX_INLINE void finish() {
    for (int64_t p = count; p < n; ++p) top_g[p] = -1;  // only with NaN scores
  }
};

// The nprobe best of the G scores s into top_g (top_s: scratch), best first (ProbeList).
PLAIDX_INLINE void best_groups(const float* s, int64_t G, int64_t nprobe, float* top_s, int64_t* top_g) {
  ProbeList list{top_s, top_g, nprobe};
  int64_t g = 0;
  for (; g < G && list.count < nprobe; ++g) list.offer(g, s[g]);
  // once the list is full, most blocks hold no score above its last entry: one vector test each
  for (; g + kBlock <= G; g += kBlock) {
    const float thr = top_s[nprobe - 1];
    int any = 0;
    for (int j = 0; j < kBlock; ++j) any |= s[g + j] > thr;
    if (!any) continue;
    for (int j = 0; j < kBlock; ++j) list.offer(g + j, s[g + j]);
  }
  for (; g < G; ++g) list.offer(g, s[g]);
  list.finish();
}

// Buckets the chunk's (token, group) pairs by group: afterwards cnt[g] is the end of bucket g (the start of
// g + 1) in pairs.
PLAIDX_INLINE void bucket_pairs(int64_t m, int64_t G, int64_t nprobe, Scratch* sc) {
  int64_t* cnt = sc->count.data();
  std::fill(cnt, cnt + G + 1, 0);
  const int64_t* tg = sc->top_g.data();
  for (int64_t e = 0; e < m * nprobe; ++e)
    if (tg[e] >= 0) ++cnt[tg[e] + 1];
  for (int64_t g = 0; g < G; ++g) cnt[g + 1] += cnt[g];
  int32_t* pairs = sc->pairs.data();
  for (int64_t e = 0; e < m * nprobe; ++e)
    if (tg[e] >= 0) pairs[cnt[tg[e]]++] = static_cast<int32_t>(e / nprobe);
}

// Codes of tokens [t0, t1), t1 - t0 <= chunk: coarse scores a tile of kRows tokens at a time, each
// token's nprobe best groups, then group by group the tokens that probe it, kRows at a time.
template <Isa I>
PLAIDX_INLINE void assign_chunk_impl(const float* X, int64_t t0, int64_t t1, int64_t d, const float* coarse_t,
                                     int64_t G, int64_t gp, const float* panels, const int64_t* pcol,
                                     const uint32_t* ids, const float* mask, int64_t nprobe, uint32_t* out,
                                     Scratch* sc) {
  using W = WideVec<I>;
  // register tiles of kRows tokens x NA vectors: 24 accumulators of the 32 avx512 registers, 12 of 16 otherwise
  constexpr int kRows = sizeof(W) == 64 ? 6 : 4;
  constexpr int NA = sizeof(W) == 64 ? 4 : 3;
  static_assert(kRows <= kMaxRows);
  const int64_t m = t1 - t0;
  float* top_s = sc->top_s.data();
  for (int64_t t = 0; t < m; t += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, m - t);
    float* cs = sc->cs.data();
    if (rows == kRows) {
      store_dots_rows<W, kRows, float, NA>(coarse_t, d, gp, X + (t0 + t) * d, cs, gp);
    } else {
      for (int64_t i = 0; i < rows; ++i) store_dots_rows<W, 1>(coarse_t, d, gp, X + (t0 + t + i) * d, cs + i * gp, gp);
    }
    for (int64_t i = 0; i < rows; ++i) best_groups(cs + i * gp, G, nprobe, top_s, sc->top_g.data() + (t + i) * nprobe);
  }
  bucket_pairs(m, G, nprobe, sc);
  const int64_t* cnt = sc->count.data();
  const int32_t* pairs = sc->pairs.data();
  float* best = sc->best.data();
  uint32_t* bid = sc->bid.data();
  std::fill(best, best + m, -std::numeric_limits<float>::infinity());
  std::fill(bid, bid + m, kNoCentroid);
  float* buf = sc->rows.data();
  float* dots = sc->dots.data();
  for (int64_t g = 0; g < G; ++g) {
    const int64_t b0 = g == 0 ? 0 : cnt[g - 1], b1 = cnt[g];
    if (b1 == b0) continue;
    const int64_t c0 = pcol[g], width = pcol[g + 1] - c0;
    const float* panel = panels + d * c0;
    const uint32_t* gid = ids + c0;
    const float* gmask = mask + c0;
    for (int64_t k = b0; k < b1; k += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, b1 - k);
      // a short last tile repeats its last token: a full tile costs less than single rows
      for (int i = 0; i < kRows; ++i)
        std::memcpy(buf + i * d, X + (t0 + pairs[k + std::min<int64_t>(i, rows - 1)]) * d,
                    static_cast<size_t>(d) * sizeof(float));
      store_dots_rows<W, kRows, float, NA>(panel, d, width, buf, dots, width);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t tok = pairs[k + i];
        const float* v = dots + i * width;
        const float top = masked_max<W>(v, gmask, width);
        const float b = best[tok];
        const uint32_t id_b = bid[tok];
        if (id_b != kNoCentroid && !(top >= b)) continue;  // the usual case once a token has a near centroid
        uint32_t cand = kNoCentroid;  // the lowest id among the columns scoring top (a padding id never wins)
        for (int64_t c = 0; c < width; ++c)
          if (v[c] == top && gid[c] < cand) cand = gid[c];
        if (cand == kNoCentroid)  // every real column scored -inf (or NaN): its lowest id
          for (int64_t c = 0; c < width; ++c) cand = std::min(cand, gid[c]);
        if (id_b == kNoCentroid || top > b || (top == b && cand < id_b)) {
          best[tok] = top;
          bid[tok] = cand;
        }
      }
    }
  }
  for (int64_t t = 0; t < m; ++t) out[t0 + t] = bid[t];
}
PLAIDX_DISPATCH(void, assign_chunk,
                (const float* X, int64_t t0, int64_t t1, int64_t d, const float* coarse_t, int64_t G, int64_t gp,
                 const float* panels, const int64_t* pcol, const uint32_t* ids, const float* mask, int64_t nprobe,
                 uint32_t* out, Scratch* sc),
                (X, t0, t1, d, coarse_t, G, gp, panels, pcol, ids, mask, nprobe, out, sc))

#if PLAIDX_HAVE_VNNI
PLAIDX_VNNI_DIAGNOSTICS_PUSH

// out[i * ldo + c] = (float(dot(x_i, col_c)) * scale[c]) * xs[i] for i < T and the 16 * NA columns from c0 of
// an int8 block (d / 4, width, 4); the T tokens' bytes (int8 + 128, rows of d at xq) make vpdpbusd's unsigned
// operand, so 128 times the column's sum comes off each dot product.
template <int T, int NA>
PLAIDX_VNNI_TARGET inline void approx_tile(const uint8_t* xq, const float* xs, int64_t d, const int8_t* block,
                                           int64_t width, const float* scale, const int32_t* sum, int64_t c0,
                                           float* out, int64_t ldo) {
  __m512i acc[T][NA];
  for (int i = 0; i < T; ++i)
    for (int u = 0; u < NA; ++u) acc[i][u] = _mm512_setzero_si512();
  for (int64_t j4 = 0; j4 < d / 4; ++j4) {
    __m512i cv[NA];
    for (int u = 0; u < NA; ++u) cv[u] = _mm512_loadu_si512(block + (j4 * width + c0 + 16 * u) * 4);
    for (int i = 0; i < T; ++i) {
      uint32_t w;
      std::memcpy(&w, xq + i * d + 4 * j4, sizeof(w));
      const __m512i b = _mm512_set1_epi32(static_cast<int32_t>(w));
      for (int u = 0; u < NA; ++u) acc[i][u] = dpbusd(acc[i][u], b, cv[u]);
    }
  }
  for (int u = 0; u < NA; ++u) {
    const int64_t c = c0 + 16 * u;
    const __m512 sc = _mm512_loadu_ps(scale + c);
    const __m512i off = _mm512_slli_epi32(_mm512_loadu_si512(sum + c), 7);
    for (int i = 0; i < T; ++i) {
      const __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][u], off));
      _mm512_storeu_ps(out + i * ldo + c, _mm512_mul_ps(_mm512_mul_ps(f, sc), _mm512_set1_ps(xs[i])));
    }
  }
}

// approx_tile over every column of the block (width a multiple of 16).
template <int T>
PLAIDX_VNNI_TARGET inline void approx_rows(const uint8_t* xq, const float* xs, int64_t d, const int8_t* block,
                                           int64_t width, const float* scale, const int32_t* sum, float* out,
                                           int64_t ldo) {
  int64_t c = 0;
  for (; c + 64 <= width; c += 64) approx_tile<T, 4>(xq, xs, d, block, width, scale, sum, c, out, ldo);
  for (; c < width; c += 16) approx_tile<T, 1>(xq, xs, d, block, width, scale, sum, c, out, ldo);
}

// out[k] = x's float32 score against rows[k], k < n: summed over j from 0 by fused multiply-adds, as every
// lane of the avx512 float32 kernel (tile_dots) sums it, so the same value bit for bit. Eight at a time.
PLAIDX_VNNI_TARGET inline void exact_dots(const float* x, const float* const* rows, int64_t n, int64_t d,
                                          float* out) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const float* r[8];
    for (int q = 0; q < 8; ++q) r[q] = rows[k + q];
    for (int64_t j = 0; j < d; ++j) {
      const float xj = x[j];
      for (int q = 0; q < 8; ++q) s[q] = __builtin_fmaf(xj, r[q][j], s[q]);
    }
    for (int q = 0; q < 8; ++q) out[k + q] = s[q];
  }
  for (; k < n; ++k) {
    float s = 0.0f;
    for (int64_t j = 0; j < d; ++j) s = __builtin_fmaf(x[j], rows[k][j], s);
    out[k] = s;
  }
}

// The columns c < width (a multiple of 16) with v[c] + mask[c] >= thr, appended to cand; their count.
PLAIDX_VNNI_TARGET inline int64_t columns_at_least(const float* v, const float* mask, int64_t width, float thr,
                                                   int64_t* cand) {
  const __m512 t = _mm512_set1_ps(thr);
  int64_t n = 0;
  for (int64_t c = 0; c < width; c += 16) {
    const __m512 f = mask != nullptr ? _mm512_add_ps(_mm512_loadu_ps(v + c), _mm512_loadu_ps(mask + c))
                                     : _mm512_loadu_ps(v + c);
    unsigned bits = _mm512_cmp_ps_mask(f, t, _CMP_GE_OQ);
    while (bits != 0) {
      cand[n++] = c + __builtin_ctz(bits);
      bits &= bits - 1;
    }
  }
  return n;
}

// kMarginSigmas rounding deviations of an approximate score (assign.h): token scale xs and squared norm x2,
// a column's (or the largest of a group's) squared norm n2 and squared scale s2.
// Plus d * 2^-23 |x| |c|: the float32 sums' own rounding (the scores compared are float32 sums of d products).
inline float margin(float xs, float x2, float n2, float s2, int64_t d) {
  return kMarginSigmas * std::sqrt((n2 * xs * xs + x2 * s2) / 12.0f) +
         static_cast<float>(d) * 0x1p-23f * std::sqrt(n2 * x2);
}

// Scores a token's listed candidates in float32 (exact_dots) and leaves the best one (ties: the lower id) as
// its only entry, with no margin.
PLAIDX_VNNI_TARGET inline void settle(const float* x, int64_t d, const float* centroids, float* la, float* le,
                                      uint32_t* lid, int32_t* count, const float** crow, float* exact) {
  const int64_t n = *count;
  for (int64_t q = 0; q < n; ++q) crow[q] = centroids + static_cast<int64_t>(lid[q]) * d;
  exact_dots(x, crow, n, d, exact);
  int64_t b = 0;
  for (int64_t q = 1; q < n; ++q)
    if (exact[q] > exact[b] || (exact[q] == exact[b] && lid[q] < lid[b])) b = q;
  la[0] = exact[b];
  le[0] = 0.0f;
  lid[0] = lid[b];
  *count = 1;
}

// Keeps the entries of a token's list whose approximate score plus margin reaches lb; their count.
inline int32_t prune(float* la, float* le, uint32_t* lid, int32_t count, float lb) {
  int32_t w = 0;
  for (int32_t r = 0; r < count; ++r)
    if (la[r] + le[r] >= lb) {
      la[w] = la[r];
      le[w] = le[r];
      lid[w++] = lid[r];
    }
  return w;
}

// assign_chunk with int8 candidate scores (AssignInt8); the same codes. False (nothing written) when a token
// of the chunk is not finite. cb: the largest squared norm and squared scale of the group centres.
//
// Probe lists: the groups whose approximate score is above the nprobe-th best one by more than twice the
// margin are in the float32 kernel's list too (fewer than nprobe groups can score above them); those within
// twice the margin of it are scored in float32 and fill the rest of the list as best_groups would. Centroids:
// a token keeps the columns of its groups whose approximate score plus margin reaches the largest approximate
// score minus margin seen so far (a lower bound of its best float32 score); at the end, or when its list is
// full, those left are scored in float32 and the best taken (ties: the lower id). A column left out scores
// below the best in float32, so the choice is the float32 kernel's.
PLAIDX_VNNI_TARGET bool assign_chunk_int8(const float* X, int64_t t0, int64_t t1, int64_t d, const AssignInt8& q8,
                                          const float cb[2], int64_t G, int64_t gp, const int64_t* pcol,
                                          const uint32_t* ids, const float* mask, int64_t nprobe, uint32_t* out,
                                          Scratch* sc) {
  const int64_t m = t1 - t0;
  int8_t* xq = sc->xq.data();
  float* xs = sc->xs.data();
  float* x2 = sc->x2.data();
  if (!quantize_rows(X + t0 * d, m, d, xq, xs)) return false;
  for (int64_t t = 0; t < m; ++t) {
    const float* x = X + (t0 + t) * d;
    float s = 0.0f;
    for (int64_t j = 0; j < d; ++j) s += x[j] * x[j];
    x2[t] = s;
  }
  for (int64_t e = 0; e < m * d; ++e) xq[e] = static_cast<int8_t>(static_cast<uint8_t>(xq[e]) ^ 0x80u);
  const uint8_t* xu = reinterpret_cast<const uint8_t*>(xq);
  float* top_s = sc->top_s.data();
  int64_t* cand = sc->cand.data();
  int64_t* keep = sc->keep.data();
  const float** crow = sc->crow.data();
  float* exact = sc->exact.data();
  for (int64_t t = 0; t < m; t += kMaxRows) {
    const int64_t rows = std::min<int64_t>(kMaxRows, m - t);
    float* cs = sc->cs.data();
    if (rows == kMaxRows) {
      approx_rows<kMaxRows>(xu + t * d, xs + t, d, q8.coarse_q, gp, q8.coarse_scale, q8.coarse_sum, cs, gp);
    } else {
      for (int64_t i = 0; i < rows; ++i)
        approx_rows<1>(xu + (t + i) * d, xs + t + i, d, q8.coarse_q, gp, q8.coarse_scale, q8.coarse_sum,
                       cs + i * gp, gp);
    }
    for (int64_t i = 0; i < rows; ++i) {
      const float* s = cs + i * gp;
      int64_t* top_g = sc->top_g.data() + (t + i) * nprobe;
      best_groups(s, G, nprobe, top_s, top_g);
      const float e = margin(xs[t + i], x2[t + i], cb[0], cb[1], d);
      const float lo = top_s[nprobe - 1] - 2.0f * e, hi = top_s[nprobe - 1] + 2.0f * e;
      int64_t n = columns_at_least(s, nullptr, gp, lo, cand);
      while (n > 0 && cand[n - 1] >= G) --n;  // columns past G are padding
      int64_t sure = 0, nb = 0;
      for (int64_t k = 0; k < n; ++k) {
        if (s[cand[k]] > hi) {
          top_g[sure++] = cand[k];
        } else {
          keep[nb] = cand[k];
          crow[nb++] = q8.coarse_rows + cand[k] * d;
        }
      }
      exact_dots(X + (t0 + t + i) * d, crow, nb, d, exact);
      // the best nprobe - sure boundary groups in float32, offered in ascending order as best_groups offers
      ProbeList rest{top_s, top_g + sure, nprobe - sure};
      for (int64_t k = 0; k < nb; ++k) rest.offer(keep[k], exact[k]);
    }
  }
  bucket_pairs(m, G, nprobe, sc);
  const int64_t* cnt = sc->count.data();
  const int32_t* pairs = sc->pairs.data();
  float* lb = sc->lb.data();
  int32_t* nl = sc->nlist.data();
  std::fill(lb, lb + m, -std::numeric_limits<float>::infinity());
  std::fill(nl, nl + m, 0);
  uint8_t* tile = sc->tile.data();
  float* dots = sc->dots.data();
  alignas(64) float txs[kMaxRows];
  for (int64_t g = 0; g < G; ++g) {
    const int64_t b0 = g == 0 ? 0 : cnt[g - 1], b1 = cnt[g];
    if (b1 == b0) continue;
    const int64_t c0 = pcol[g], width = pcol[g + 1] - c0;
    const int8_t* block = q8.panels_q + d * c0;
    const uint32_t* gid = ids + c0;
    const float* gmask = mask + c0;
    const float gn2 = q8.group_bound[2 * g], gs2 = q8.group_bound[2 * g + 1];
    for (int64_t k = b0; k < b1; k += kMaxRows) {
      const int64_t rows = std::min<int64_t>(kMaxRows, b1 - k);
      // a short last tile repeats its last token: a full tile costs less than single rows
      for (int i = 0; i < kMaxRows; ++i) {
        const int64_t tok = pairs[k + std::min<int64_t>(i, rows - 1)];
        std::memcpy(tile + i * d, xu + tok * d, static_cast<size_t>(d));
        txs[i] = xs[tok];
      }
      approx_rows<kMaxRows>(tile, txs, d, block, width, q8.panel_scale + c0, q8.panel_sum + c0, dots, width);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t tok = pairs[k + i];
        const float* v = dots + i * width;
        const float top = masked_max<v16f>(v, gmask, width);
        const float e = margin(xs[tok], x2[tok], gn2, gs2, d);
        // no column of the group can reach the token's best: the usual case once it has a near centroid
        if (top + e < lb[tok]) continue;
        lb[tok] = std::max(lb[tok], top - e);
        const int64_t n = columns_at_least(v, gmask, width, lb[tok] - e, cand);
        float* la = sc->la.data() + tok * kList;
        float* le = sc->le.data() + tok * kList;
        uint32_t* lid = sc->lid.data() + tok * kList;
        int32_t& count = nl[tok];
        for (int64_t q = 0; q < n; ++q) {
          if (count == kList) {  // drop the entries the bound has passed, else score them all
            count = prune(la, le, lid, count, lb[tok]);
            if (count == kList) settle(X + (t0 + tok) * d, d, q8.centroids, la, le, lid, &count, crow, exact);
          }
          la[count] = v[cand[q]];
          le[count] = e;
          lid[count++] = gid[cand[q]];
        }
      }
    }
  }
  for (int64_t t = 0; t < m; ++t) {
    float* la = sc->la.data() + t * kList;
    float* le = sc->le.data() + t * kList;
    uint32_t* lid = sc->lid.data() + t * kList;
    int32_t w = prune(la, le, lid, nl[t], lb[t]);
    if (w > 1) settle(X + (t0 + t) * d, d, q8.centroids, la, le, lid, &w, crow, exact);
    out[t0 + t] = w > 0 ? lid[0] : kNoCentroid;
  }
  return true;
}
PLAIDX_VNNI_DIAGNOSTICS_POP
#endif

}  // namespace

void assign_nearest(const float* X, int64_t n, int64_t d, const float* coarse_t, int64_t G, int64_t gp,
                    const float* panels, int64_t P, const int64_t* pcol, const uint32_t* ids, int64_t nprobe,
                    uint32_t* out, int num_threads, const AssignInt8* q8) {
  if (d <= 0) throw std::invalid_argument("d must be positive");
  if (G < 1 || gp < G || gp % 8 != 0) throw std::invalid_argument("coarse_t must have gp >= G columns, gp % 8 == 0");
  if (nprobe < 1 || nprobe > G) throw std::invalid_argument("nprobe must be in [1, G]");
  int threads = resolve_threads(num_threads);
  if (n <= 0) return;
  int64_t widest = 8;
  for (int64_t g = 0; g < G; ++g) widest = std::max(widest, pcol[g + 1] - pcol[g]);
  // 0 on a real column, -inf on padding: a group's best score is one masked vector maximum
  std::vector<float> mask(static_cast<size_t>(P));
  for (int64_t c = 0; c < P; ++c) mask[c] = ids[c] == kNoCentroid ? -std::numeric_limits<float>::infinity() : 0.0f;
  bool int8 = q8 != nullptr && have_vnni() && d % 4 == 0 && d <= kMaxQuantizedDim && gp % 16 == 0;
  for (int64_t g = 0; int8 && g <= G; ++g) int8 = pcol[g] % 16 == 0;
  float cb[2] = {0.0f, 0.0f};  // the group centres' largest squared norm and squared scale
  if (int8) {
    for (int64_t g = 0; g < G; ++g) {
      float s = 0.0f;
      for (int64_t j = 0; j < d; ++j) s += q8->coarse_rows[g * d + j] * q8->coarse_rows[g * d + j];
      cb[0] = std::max(cb[0], s);
      cb[1] = std::max(cb[1], q8->coarse_scale[g] * q8->coarse_scale[g]);
    }
  }
  // work per token: the coarse scores plus nprobe groups; a chunk per thread at least
  const int64_t per_token = d * (gp + nprobe * widest);
  threads = threads_for(n * per_token, int64_t{8} << 20, threads);
  const int64_t chunk = d * P >= kWidePanels ? kWideChunk : kChunk;
  const int64_t nchunks = (n + chunk - 1) / chunk;
  // one chunk at a time to whichever thread is free: a chunk's cost follows the sizes of the groups its
  // tokens probe, so equal shares of chunks finish at different times
  parallel_chunks(nchunks, 1, threads, [&](int64_t begin, int64_t end) {
    Scratch sc;
    sc.cs.resize(static_cast<size_t>(kMaxRows * gp));
    sc.top_g.resize(static_cast<size_t>(chunk * nprobe));
    sc.top_s.resize(static_cast<size_t>(nprobe));
    sc.count.resize(static_cast<size_t>(G + 1));
    sc.pairs.resize(static_cast<size_t>(chunk * nprobe));
    sc.rows.resize(static_cast<size_t>(kMaxRows * d));
    sc.dots.resize(static_cast<size_t>(kMaxRows * widest));
    sc.best.resize(static_cast<size_t>(chunk));
    sc.bid.resize(static_cast<size_t>(chunk));
    if (int8) {
      const size_t wide = static_cast<size_t>(std::max(gp, widest));
      sc.xq.resize(static_cast<size_t>(chunk * d));
      sc.xs.resize(static_cast<size_t>(chunk));
      sc.x2.resize(static_cast<size_t>(chunk));
      sc.tile.resize(static_cast<size_t>(kMaxRows * d));
      sc.cand.resize(wide);
      sc.crow.resize(wide);
      sc.exact.resize(wide);
      sc.keep.resize(static_cast<size_t>(G));
      sc.lb.resize(static_cast<size_t>(chunk));
      sc.nlist.resize(static_cast<size_t>(chunk));
      sc.la.resize(static_cast<size_t>(chunk * kList));
      sc.le.resize(static_cast<size_t>(chunk * kList));
      sc.lid.resize(static_cast<size_t>(chunk * kList));
    }
    for (int64_t c = begin; c < end; ++c) {
      const int64_t t0 = c * chunk, t1 = std::min(n, (c + 1) * chunk);
#if PLAIDX_HAVE_VNNI
      if (int8 && assign_chunk_int8(X, t0, t1, d, *q8, cb, G, gp, pcol, ids, mask.data(), nprobe, out, &sc))
        continue;
#endif
      assign_chunk(X, t0, t1, d, coarse_t, G, gp, panels, pcol, ids, mask.data(), nprobe, out, &sc);
    }
  }, Schedule::kDynamic);
}

}  // namespace plaidx::cpu
