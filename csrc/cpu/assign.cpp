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

constexpr int kRows = 4;        // tokens per coarse tile and per fine tile
constexpr int64_t kChunk = 2048;  // tokens bucketed together, so that a group's panel serves several at once

// Scratch of one thread.
struct Scratch {
  std::vector<float> cs;       // (kRows, gp) coarse scores
  std::vector<int64_t> top_g;  // (kChunk, nprobe) probed groups
  std::vector<float> top_s;    // (nprobe,)
  std::vector<int64_t> count;  // (G + 1,) bucket starts
  std::vector<int32_t> pairs;  // (kChunk * nprobe,) tokens, bucketed by group
  std::vector<float> rows;     // (kRows, d) gathered tokens
  std::vector<float> dots;     // (kRows, widest)
  std::vector<float> best;     // (kChunk,)
  std::vector<uint32_t> bid;   // (kChunk,)
};

// Codes of tokens [t0, t1), t1 - t0 <= kChunk: coarse scores a tile of kRows tokens at a time, each
// token's nprobe best groups, then group by group the tokens that probe it, kRows at a time.
template <Isa I>
PLAIDX_INLINE void assign_chunk_impl(const float* X, int64_t t0, int64_t t1, int64_t d, const float* coarse_t,
                                     int64_t G, int64_t gp, const float* panels, const int64_t* pcol,
                                     const uint32_t* ids, int64_t nprobe, uint32_t* out, Scratch* sc) {
  using W = WideVec<I>;
  const int64_t m = t1 - t0;
  float* top_s = sc->top_s.data();
  for (int64_t t = 0; t < m; t += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, m - t);
    float* cs = sc->cs.data();
    if (rows == kRows) {
      store_dots_rows<W, kRows>(coarse_t, d, gp, X + (t0 + t) * d, cs, gp);
    } else {
      for (int64_t i = 0; i < rows; ++i) store_dots_rows<W, 1>(coarse_t, d, gp, X + (t0 + t + i) * d, cs + i * gp, gp);
    }
    for (int64_t i = 0; i < rows; ++i) {
      const float* s = cs + i * gp;
      int64_t* top_g = sc->top_g.data() + (t + i) * nprobe;
      // the nprobe best groups; a later group enters only with a strictly higher score
      int64_t count = 0;
      for (int64_t g = 0; g < G; ++g) {
        const float v = s[g];
        if (count == nprobe && !(v > top_s[count - 1])) continue;
        int64_t pos = count < nprobe ? count : nprobe - 1;
        while (pos > 0 && v > top_s[pos - 1]) {
          top_s[pos] = top_s[pos - 1];
          top_g[pos] = top_g[pos - 1];
          --pos;
        }
        top_s[pos] = v;
        top_g[pos] = g;
        if (count < nprobe) ++count;
      }
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
    for (int64_t k = b0; k < b1; k += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, b1 - k);
      if (rows == kRows) {
        for (int i = 0; i < kRows; ++i)
          std::memcpy(buf + i * d, X + (t0 + pairs[k + i]) * d, static_cast<size_t>(d) * sizeof(float));
        store_dots_rows<W, kRows>(panel, d, width, buf, dots, width);
      } else {
        for (int64_t i = 0; i < rows; ++i)
          store_dots_rows<W, 1>(panel, d, width, X + (t0 + pairs[k + i]) * d, dots + i * width, width);
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t tok = pairs[k + i];
        const float* v = dots + i * width;
        float b = best[tok];
        uint32_t id_b = bid[tok];
        for (int64_t c = 0; c < width; ++c) {
          const uint32_t id = gid[c];
          if (id == kNoCentroid) continue;
          if (v[c] > b || (v[c] == b && id < id_b) || id_b == kNoCentroid) {
            b = v[c];
            id_b = id;
          }
        }
        best[tok] = b;
        bid[tok] = id_b;
      }
    }
  }
  for (int64_t t = 0; t < m; ++t) out[t0 + t] = bid[t];
}
PLAIDX_DISPATCH(void, assign_chunk,
                (const float* X, int64_t t0, int64_t t1, int64_t d, const float* coarse_t, int64_t G, int64_t gp,
                 const float* panels, const int64_t* pcol, const uint32_t* ids, int64_t nprobe, uint32_t* out,
                 Scratch* sc),
                (X, t0, t1, d, coarse_t, G, gp, panels, pcol, ids, nprobe, out, sc))

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
  (void)P;
  // work per token: the coarse scores plus nprobe groups; a chunk per thread at least
  const int64_t per_token = d * (gp + nprobe * widest);
  threads = threads_for(n * per_token, int64_t{8} << 20, threads);
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  parallel_chunks(nchunks, grain_for(nchunks, threads, 4), threads, [&](int64_t begin, int64_t end) {
    Scratch sc;
    sc.cs.resize(static_cast<size_t>(kRows * gp));
    sc.top_g.resize(static_cast<size_t>(kChunk * nprobe));
    sc.top_s.resize(static_cast<size_t>(nprobe));
    sc.count.resize(static_cast<size_t>(G + 1));
    sc.pairs.resize(static_cast<size_t>(kChunk * nprobe));
    sc.rows.resize(static_cast<size_t>(kRows * d));
    sc.dots.resize(static_cast<size_t>(kRows * widest));
    sc.best.resize(static_cast<size_t>(kChunk));
    sc.bid.resize(static_cast<size_t>(kChunk));
    for (int64_t c = begin; c < end; ++c)
      assign_chunk(X, c * kChunk, std::min(n, (c + 1) * kChunk), d, coarse_t, G, gp, panels, pcol, ids, nprobe, out,
                   &sc);
  });
}

}  // namespace plaidx::cpu
