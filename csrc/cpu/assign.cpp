// assign.cpp: grouped nearest-centroid assignment (see assign.h).
#include "cpu/assign.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cpu/dots.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"

namespace plaidx::cpu {
namespace {

constexpr int kMaxRows = 6;       // tokens per register tile, at most
constexpr int64_t kChunk = 2048;  // tokens bucketed together, so that a group's panel serves several at once
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
  std::vector<int64_t> top_g;  // (kChunk, nprobe) probed groups
  std::vector<float> top_s;    // (nprobe,)
  std::vector<int64_t> count;  // (G + 1,) bucket starts
  std::vector<int32_t> pairs;  // (kChunk * nprobe,) tokens, bucketed by group
  std::vector<float> rows;     // (kMaxRows, d) gathered tokens
  std::vector<float> dots;     // (kMaxRows, widest)
  std::vector<float> best;     // (kChunk,)
  std::vector<uint32_t> bid;   // (kChunk,)
};

// Codes of tokens [t0, t1), t1 - t0 <= kChunk: coarse scores a tile of kRows tokens at a time, each
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
    for (int64_t i = 0; i < rows; ++i) {
      const float* s = cs + i * gp;
      int64_t* top_g = sc->top_g.data() + (t + i) * nprobe;
      // the nprobe best groups; a later group enters only with a strictly higher score
      int64_t count = 0;
      auto offer = [&](int64_t g) {
        const float v = s[g];
        if (count == nprobe && !(v > top_s[count - 1])) return;
        int64_t pos = count < nprobe ? count : nprobe - 1;
        while (pos > 0 && v > top_s[pos - 1]) {
          top_s[pos] = top_s[pos - 1];
          top_g[pos] = top_g[pos - 1];
          --pos;
        }
        top_s[pos] = v;
        top_g[pos] = g;
        if (count < nprobe) ++count;
      };
      int64_t g = 0;
      for (; g < G && count < nprobe; ++g) offer(g);
      // once the list is full, most blocks hold no score above its last entry: one vector test each
      for (; g + kBlock <= G; g += kBlock) {
        const float thr = top_s[nprobe - 1];
        int any = 0;
        for (int j = 0; j < kBlock; ++j) any |= s[g + j] > thr;
        if (!any) continue;
        for (int j = 0; j < kBlock; ++j) offer(g + j);
      }
      for (; g < G; ++g) offer(g);
      for (int64_t p = count; p < nprobe; ++p) top_g[p] = -1;  // only with NaN scores
    }
  }
  // bucket (token, group) pairs by group
  int64_t* cnt = sc->count.data();
  std::fill(cnt, cnt + G + 1, 0);
  const int64_t* tg = sc->top_g.data();
  for (int64_t e = 0; e < m * nprobe; ++e)
    if (tg[e] >= 0) ++cnt[tg[e] + 1];
  for (int64_t g = 0; g < G; ++g) cnt[g + 1] += cnt[g];
  int32_t* pairs = sc->pairs.data();
  for (int64_t e = 0; e < m * nprobe; ++e)
    if (tg[e] >= 0) pairs[cnt[tg[e]]++] = static_cast<int32_t>(e / nprobe);
  // cnt[g] is now the end of bucket g (the start of g + 1)
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

}  // namespace

void assign_nearest(const float* X, int64_t n, int64_t d, const float* coarse_t, int64_t G, int64_t gp,
                    const float* panels, int64_t P, const int64_t* pcol, const uint32_t* ids, int64_t nprobe,
                    uint32_t* out, int num_threads) {
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
  // work per token: the coarse scores plus nprobe groups; a chunk per thread at least
  const int64_t per_token = d * (gp + nprobe * widest);
  threads = threads_for(n * per_token, int64_t{8} << 20, threads);
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  // one chunk at a time to whichever thread is free: a chunk's cost follows the sizes of the groups its
  // tokens probe, so equal shares of chunks finish at different times
  parallel_chunks(nchunks, 1, threads, [&](int64_t begin, int64_t end) {
    Scratch sc;
    sc.cs.resize(static_cast<size_t>(kMaxRows * gp));
    sc.top_g.resize(static_cast<size_t>(kChunk * nprobe));
    sc.top_s.resize(static_cast<size_t>(nprobe));
    sc.count.resize(static_cast<size_t>(G + 1));
    sc.pairs.resize(static_cast<size_t>(kChunk * nprobe));
    sc.rows.resize(static_cast<size_t>(kMaxRows * d));
    sc.dots.resize(static_cast<size_t>(kMaxRows * widest));
    sc.best.resize(static_cast<size_t>(kChunk));
    sc.bid.resize(static_cast<size_t>(kChunk));
    for (int64_t c = begin; c < end; ++c)
      assign_chunk(X, c * kChunk, std::min(n, (c + 1) * kChunk), d, coarse_t, G, gp, panels, pcol, ids, mask.data(),
                   nprobe, out, &sc);
  }, Schedule::kDynamic);
}

}  // namespace plaidx::cpu
