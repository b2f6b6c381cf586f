// centroid_scores.cpp: query-token x centroid scores (see centroid_scores.h).
#include "cpu/centroid_scores.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "cpu/dots.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"

namespace plaidx::cpu {
namespace {

constexpr int64_t kBlock = 64;  // cells per block: a panel of d * 64 floats (32 KiB for d = 128)
// Multiply-adds up to which the kernel stays on one thread, and the least work per thread above it.
// One query (32 tokens x 8192 cells, d = 128) is 34M multiply-adds, ~0.55 ms on one AVX-512 core and
// ~0.28 ms on two of an idle machine; a query against 4096 cells or fewer stays on one thread.
constexpr int64_t kMinParallelWork = int64_t{24} << 20;
constexpr int64_t kMinWorkPerThread = int64_t{16} << 20;

// Register tiles are dots.h's store_tile: R query tokens (rows of Qa, stride d) against panel (d, kBlock)
// columns [u0, u0 + NA * lanes), each score summed over j in order from 0.

// The last `rows` (< R + 1) query tokens with one tile of exactly `rows` rows.
template <class V, int NA, int R>
PLAIDX_INLINE void score_rest(const float* Qa, int64_t d, const float* panel, int64_t u0, float* out,
                              int64_t ldo, int64_t rows) {
  if constexpr (R > 0) {
    if (rows == R) {
      store_tile<V, R, NA>(panel, d, kBlock, Qa, u0, out, ldo);
    } else {
      score_rest<V, NA, R - 1>(Qa, d, panel, u0, out, ldo, rows);
    }
  }
}

// Tile shape per copy: as many accumulators as the registers allow (32 zmm, 16 ymm / xmm).
template <Isa I>
struct TileShape {
  static constexpr int kRows = I == Isa::kAvx512 ? 6 : I == Isa::kAvx2 ? 6 : 4;
  static constexpr int kVecs = I == Isa::kAvx512 ? 4 : 2;
};

// out[a, c] (row stride ldo) = scores of the qlen tokens of Qq (qlen, d) against panel columns
// c < width rounded up to a whole tile; panel (d, kBlock).
template <Isa I>
PLAIDX_INLINE void score_block_impl(const float* Qq, int64_t qlen, int64_t d, const float* panel,
                                    int64_t width, float* out, int64_t ldo) {
  using V = WideVec<I>;
  constexpr int RA = TileShape<I>::kRows, NA = TileShape<I>::kVecs;
  constexpr int64_t cols = NA * static_cast<int64_t>(sizeof(V) / sizeof(float));
  static_assert(kBlock % cols == 0, "a panel is a whole number of tiles");
  int64_t a = 0;
  for (; a + RA <= qlen; a += RA)
    for (int64_t u0 = 0; u0 < width; u0 += cols)
      store_tile<V, RA, NA>(panel, d, kBlock, Qq + a * d, u0, out + a * ldo, ldo);
  if (a < qlen)
    for (int64_t u0 = 0; u0 < width; u0 += cols)
      score_rest<V, NA, RA - 1>(Qq + a * d, d, panel, u0, out + a * ldo, ldo, qlen - a);
}
PLAIDX_DISPATCH(void, score_block,
                (const float* Qq, int64_t qlen, int64_t d, const float* panel, int64_t width, float* out,
                 int64_t ldo),
                (Qq, qlen, d, panel, width, out, ldo))

// panel (d, kBlock) = Ct[:, c0:c0 + width], columns past width zero. (Software prefetching of the
// next block's rows was tried: it slowed the cache-resident case and did not help the cold one.)
void pack_panel(const float* Ct, int64_t d, int64_t nlist, int64_t c0, int64_t width, float* panel) {
  for (int64_t j = 0; j < d; ++j) {
    float* dst = panel + j * kBlock;
    std::memcpy(dst, Ct + j * nlist + c0, static_cast<size_t>(width) * sizeof(float));
    if (width < kBlock) std::fill(dst + width, dst + kBlock, 0.0f);
  }
}

}  // namespace

void query_centroid_scores(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* Ct,
                           int64_t nlist, float* S, int num_threads) {
  if (d <= 0) throw std::invalid_argument("d must be positive");
  if (nq < 0 || qlen < 0 || nlist < 0) throw std::invalid_argument("nq, qlen and nlist must be >= 0");
  int threads = resolve_threads(num_threads);
  if (nq == 0 || qlen == 0 || nlist == 0) return;
  const int64_t nblocks = (nlist + kBlock - 1) / kBlock;
  // Tiles (cell block, query), block-major so that consecutive tiles of a chunk share a panel.
  const int64_t ntiles = nblocks * nq;
  const int64_t work = nq * qlen * nlist * d;
  threads = work > kMinParallelWork ? threads_for(work, kMinWorkPerThread, threads) : 1;
  parallel_chunks(ntiles, grain_for(ntiles, threads, 4), threads, [&](int64_t begin, int64_t end) {
    std::vector<float> panel(static_cast<size_t>(d * kBlock));
    std::vector<float> tail;  // (qlen, kBlock): scores of the last, partial block before they are cut
    int64_t packed = -1;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t cb = t / nq, q = t % nq, c0 = cb * kBlock, width = std::min(kBlock, nlist - c0);
      if (cb != packed) {
        pack_panel(Ct, d, nlist, c0, width, panel.data());
        packed = cb;
      }
      const float* Qq = Q + q * qlen * d;
      float* Sq = S + q * qlen * nlist;
      if (width == kBlock) {
        score_block(Qq, qlen, d, panel.data(), width, Sq + c0, nlist);
      } else {
        tail.resize(static_cast<size_t>(qlen * kBlock));
        score_block(Qq, qlen, d, panel.data(), width, tail.data(), kBlock);
        for (int64_t a = 0; a < qlen; ++a)
          std::memcpy(Sq + a * nlist + c0, tail.data() + a * kBlock,
                      static_cast<size_t>(width) * sizeof(float));
      }
    }
  });
}

}  // namespace plaidx::cpu
