// search.cpp: PLAID search and exhaustive exact search drivers (see search.h).
#include "cpu/search.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/vnni.h"
#if PLAIDX_HAVE_VNNI
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

#include "cpu/adc.h"
#include "cpu/dots.h"
#include "cpu/pagein.h"
#include "cpu/parallel.h"
#include "cpu/quantize.h"
#include "cpu/simd.h"
#include "cpu/token.h"
#include "cpu/topk.h"
#include "cpu/validate.h"

namespace plaidx::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kNegInfRow[8] = {kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf};
constexpr int64_t kCellBlock = 64;  // cells scored, transposed and summarised per block
// Least work per thread for a parallel stage inside one query (each is roughly 50 microseconds).
constexpr int64_t kMinCellScores = 1 << 19;         // S entries transposed
constexpr int64_t kMinCellDots = int64_t{16} << 20;  // multiply-adds of the fused cell scores
constexpr int64_t kMinCentroidRows = 1 << 11;       // score rows read by the centroid-score stages
constexpr int64_t kMinProbeReads = 1 << 12;         // block maxima and cell scores read by the probe
constexpr int64_t kMinExactTokens = 512;            // tokens decompressed and scored exactly
constexpr int64_t kQuantBlock = 32;                 // tokens decoded and quantised per pass (exact_int8)
constexpr int64_t kMinKeptTokens = 2048;            // kept tokens scored (cheaper each than decompressing)
// Token rows' packed bytes scored by table lookups (exact_adc), each a 32-column row of the table added: about
// 4 ns each, so about 30 us; a token costs as many as it has bytes (32 at d 128 and nbits 2, 96 at d 384),
// and 128 candidates of 10 tokens at d 384 take two threads (0.7x the stage's time on Tatoeba).
constexpr int64_t kMinAdcBytes = int64_t{1} << 13;
constexpr int64_t kMinAdcTable = int64_t{1} << 19;  // multiply-adds of the lookup table's rows
constexpr int64_t kHalfBlock = 64;                  // float16 tokens converted per pass
constexpr int64_t kProbeBuffer = 64;                // nprobe up to which the probe keeps a sorted buffer
constexpr int64_t kMaxQp16 = 256;                   // query tokens up to which the vnni kernel runs
constexpr int64_t kSmallProbe = 8;                  // nprobe up to which the probe bound skips nth_element

// A query quantised row-wise (quantize.h): its int8 rows, their scales (qp16 + 16, padding 0) and the query
// in the layout of the kernels that run (vnni: (d / 4, qp16, 4) bytes + 128; else (d, qp) floats).
struct QuantQuery {
  std::vector<int8_t> qi;
  std::vector<float> qscale;
  std::vector<uint8_t> qq;
  std::vector<float> qf;
  std::vector<int32_t> qsum;  // vnni: (qp16,) sum_j qi[a, j] (0 for padding columns)
  std::vector<int8_t> qa;     // amx: (d / 4, qp16, 4) the int8 values in the vnni layout, not offset
};

// n floats, all 0, at a 64-byte boundary (so that St's rows of 16 floats are whole cache lines), and their
// deleter.
constexpr std::align_val_t kLineAlign{64};
inline float* aligned_zeros(size_t n) { return new (kLineAlign) float[n](); }
struct FloatFree {
  void operator()(float* p) const { ::operator delete[](p, kLineAlign); }
};
struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

// Per-query scratch, reused across the queries a thread handles.
struct Workspace {
  std::unique_ptr<float[], FloatFree> St;  // (nlist, qp): S[q] transposed, padding columns 0 (written per query)
  std::unique_ptr<float[]> bmax;   // (nblocks, qp): per cell block, each column's best non-empty cell
  std::vector<uint8_t> keep;       // (nlist,): max_a S[q, a, c] >= threshold
  std::vector<uint8_t> cell_seen;  // (nlist,): all 0 between queries
  std::unique_ptr<uint8_t[], FreeDeleter> doc_seen;  // (ndocs,): all 0 between queries
  std::vector<int64_t> probed;                       // probed cells (a cell may repeat)
  std::vector<std::vector<int64_t>> probe_parts;     // per chunk of query tokens: its probed cells
  std::vector<std::vector<float>> probe_keys;        // per chunk: probe scratch
  std::vector<int64_t> cand;                         // candidate documents, ascending
  std::vector<float> pruned;                         // (ncand,)
  std::vector<uint8_t> skipped;                      // (ncand,): some token of the document was pruned
  std::vector<Scored> items;
  std::vector<int64_t> docs;
  std::vector<float> scores;
  std::vector<int64_t> redo;
  std::vector<float> redo_scores;
  QuantQuery qz;  // the query quantised (cell_codes, kept int8 vectors)
  std::vector<int8_t> lut;   // exact_adc: (pb, 256, qc) the query's lookup table (adc.h)
  std::vector<float> adc_qt;  // (d, qc): the query transposed, padding columns 0
  std::vector<float> adc_inv, adc_u;  // (qc,)

  // St has kAdcSlack floats after its last row (0), so that the lookup stage's 32-column reads stay inside.
  static constexpr int64_t kAdcSlack = 32;
  Workspace(int64_t nlist, int64_t qp, int64_t ndocs)
      : St(aligned_zeros(static_cast<size_t>(nlist * qp + kAdcSlack))),
        bmax(new float[static_cast<size_t>((nlist + kCellBlock - 1) / kCellBlock * qp)]),
        keep(static_cast<size_t>(nlist)),
        cell_seen(static_cast<size_t>(nlist), 0),
        doc_seen(static_cast<uint8_t*>(std::calloc(static_cast<size_t>(ndocs > 0 ? ndocs : 1), 1))) {
    if (!doc_seen) throw std::bad_alloc();
  }
};

// Each thread keeps the workspaces of its last searches for the next ones of the same shape: the buffers
// (St alone is nlist * qp floats, 2 MiB at 16384 cells and 32 query tokens) are then neither allocated
// nor faulted in again, about a tenth of a one-query search. Queries of different lengths have different
// shapes (the search leaves out their rows of zeros, so one model's queries come in several lengths):
// kCachedShapes of them are kept, the least recently used making room, at most kMaxCachedBytes of St in all.
// A search that throws drops its workspace (its cleared-between-queries flags may not be clear).
constexpr int64_t kMaxCachedBytes = int64_t{64} << 20;
constexpr int kCachedShapes = 4;

struct CachedWorkspace {
  std::unique_ptr<Workspace> ws;
  int64_t nlist = -1, qp = -1, ndocs = -1;
  int64_t used = 0;  // when it was last released (a per-thread counter)
  int64_t bytes() const { return ws ? nlist * qp * static_cast<int64_t>(sizeof(float)) : 0; }
};
struct WorkspaceCache {
  CachedWorkspace slot[kCachedShapes];
  int64_t clock = 0;
};
thread_local WorkspaceCache tl_workspaces;

class WorkspaceLease {
 public:
  WorkspaceLease(int64_t nlist, int64_t qp, int64_t ndocs) : nlist_(nlist), qp_(qp), ndocs_(ndocs) {
    for (CachedWorkspace& c : tl_workspaces.slot)
      if (c.ws && c.nlist == nlist && c.qp == qp && c.ndocs == ndocs) {
        ws_ = std::move(c.ws);
        return;
      }
    ws_ = std::make_unique<Workspace>(nlist, qp, ndocs);
  }
  Workspace& get() { return *ws_; }
  // The searches went through: the workspace is clean again and may serve the next one of its shape, in an
  // empty slot or the least recently used one, while the cached St stay within kMaxCachedBytes.
  void release() {
    const int64_t bytes = nlist_ * qp_ * static_cast<int64_t>(sizeof(float));
    if (bytes > kMaxCachedBytes) return;
    WorkspaceCache& cache = tl_workspaces;
    CachedWorkspace* oldest = nullptr;
    for (CachedWorkspace& c : cache.slot)
      if (oldest == nullptr || !c.ws || (oldest->ws && c.used < oldest->used)) oldest = &c;
    *oldest = CachedWorkspace{std::move(ws_), nlist_, qp_, ndocs_, ++cache.clock};
    for (;;) {  // evict the least recently used others while the cache holds too much
      int64_t total = 0;
      CachedWorkspace* lru = nullptr;
      for (CachedWorkspace& c : cache.slot) {
        total += c.bytes();
        if (c.ws && &c != oldest && (lru == nullptr || c.used < lru->used)) lru = &c;
      }
      if (total <= kMaxCachedBytes || lru == nullptr) break;
      lru->ws.reset();
    }
  }

 private:
  std::unique_ptr<Workspace> ws_;
  int64_t nlist_, qp_, ndocs_;
};

// Cells [c0, c1): St rows = S[q] transposed, padding columns 0.
void transpose_cells(const float* Sq, int64_t qlen, int64_t nlist, int64_t c0, int64_t c1, float* St) {
  const int64_t qp = padded_qlen(qlen);
  for (int64_t b = c0; b < c1; b += kCellBlock) {
    const int64_t e = std::min(b + kCellBlock, c1);
    for (int64_t a = 0; a < qlen; ++a) {
      const float* row = Sq + a * nlist;
      for (int64_t c = b; c < e; ++c) St[c * qp + a] = row[c];
    }
    for (int64_t c = b; c < e; ++c)
      for (int64_t a = qlen; a < qp; ++a) St[c * qp + a] = 0.0f;
  }
}

// Cells [c0, c1): St rows = centroids (nlist, d) against Qt (d, qp), the scores S would hold (equal bit
// for bit: see store_tile), computed straight in the transposed layout.
template <Isa I>
PLAIDX_INLINE void score_cells_impl(const float* Qt, int64_t qp, const float* centroids, int64_t d, int64_t c0,
                                    int64_t c1, float* St) {
  using W = WideVec<I>;
  constexpr int T = sizeof(W) == 64 ? 8 : 4;  // cells per tile: as many accumulators as registers allow
  int64_t c = c0;
  for (; c + T <= c1; c += T) store_dots_rows<W, T>(Qt, d, qp, centroids + c * d, St + c * qp, qp);
  for (; c < c1; ++c) store_dots_rows<W, 1>(Qt, d, qp, centroids + c * d, St + c * qp, qp);
}
PLAIDX_DISPATCH(void, score_cells,
                (const float* Qt, int64_t qp, const float* centroids, int64_t d, int64_t c0, int64_t c1,
                 float* St),
                (Qt, qp, centroids, d, c0, c1, St))

// The quantised cell scores (quantize.h), generic copy: cells [c0, c1) of St from the int8 centroid rows
// cq (nlist, d) against the query's int8 values as floats, Qf (d, qp): each sum is an exact integer, so
// the summation order of this kernel does not matter; then St = (St * cscale[c]) * qscale[a].
template <Isa I>
PLAIDX_INLINE void score_cells_q_impl(const float* Qf, const float* qscale, int64_t qp, const int8_t* cq,
                                      const float* cscale, int64_t d, int64_t c0, int64_t c1, float* St) {
  using W = WideVec<I>;
  constexpr int T = sizeof(W) == 64 ? 8 : 4;
  int64_t c = c0;
  for (; c + T <= c1; c += T) store_dots_rows<W, T, int8_t>(Qf, d, qp, cq + c * d, St + c * qp, qp);
  for (; c < c1; ++c) store_dots_rows<W, 1, int8_t>(Qf, d, qp, cq + c * d, St + c * qp, qp);
  for (c = c0; c < c1; ++c) {
    float* row = St + c * qp;
    const float s = cscale[c];
    for (int64_t a = 0; a < qp; ++a) row[a] = (row[a] * s) * qscale[a];
  }
}
PLAIDX_DISPATCH(void, score_cells_q,
                (const float* Qf, const float* qscale, int64_t qp, const int8_t* cq, const float* cscale, int64_t d,
                 int64_t c0, int64_t c1, float* St),
                (Qf, qscale, qp, cq, cscale, d, c0, c1, St))

// The quantised cell scores of one search call (cell_codes); cq == nullptr scores the cells in float.
// vnni: the avx512-vnni kernel runs, which also computes keep and the block maxima (from empty, threshold
// and qlen; the other kernels leave them to summarise_cells, with the same values).
struct CellCodes {
  const int8_t* cq = nullptr;      // (nlist, d)
  const float* cscale = nullptr;   // (nlist,)
  const int32_t* rsum = nullptr;   // (nlist,): sum_j cq[c, j] (the +128 offset of the query bytes adds 128 * rsum)
  const uint8_t* empty = nullptr;  // (nlist,)
  float threshold = 0.0f;          // the smallest float >= the search's (double) threshold
  int64_t qlen = 0;
  bool vnni = false;
  bool amx = false;  // (with vnni) score_cells_amx scores the whole groups of 32 cells
  bool stream = false;  // (with vnni) St's whole 64-byte rows are written around the caches (kStreamBytes)
};

// From this size of St (nlist * qp floats: 131,072 cells of 32 query tokens) the vnni kernel writes St's
// rows with non-temporal stores. St is then larger than the part of a last-level cache a core can count on,
// so the stages after it find little of it cached either way, and ordinary stores would first read every
// line from memory (0.92x the p50 at 262,144 cells, 33.5 MB, on a 32 MiB L3). Smaller tables stay cached for
// the probe and the centroid passes, and are stored as before.
constexpr int64_t kStreamBytes = int64_t{16} << 20;

#if PLAIDX_HAVE_VNNI
PLAIDX_VNNI_DIAGNOSTICS_PUSH


// acc[i][u] = the exact int32 dot products of the T int8 rows at rows (stride d) against query columns
// [a0 + 16 u, a0 + 16 u + 16) of qq ((d / 4, qp16, 4) bytes: the query's int8 values + 128), plus 128 times
// the row's sum (the offset of the query bytes), by vpdpbusd: 4 byte products per lane and step.
// RowsBiased: the rows' bytes are taken as their int8 values + 128 instead (stored so, or FlipRows: flipped
// on the fly, xor 0x80), the query's are taken back to int8 (xor 0x80), and the offset is 128 times the query
// column's sum.
template <int T, int NA, bool RowsBiased = false, bool FlipRows = false>
PLAIDX_VNNI_TARGET inline void vnni_dots(const uint8_t* qq, int64_t qp16, const int8_t* rows, int64_t d, int64_t a0,
                                         __m512i (&acc)[T][NA]) {
  for (int i = 0; i < T; ++i)
    for (int u = 0; u < NA; ++u) acc[i][u] = _mm512_setzero_si512();
  const int64_t groups = d / 4;
  for (int64_t g = 0; g < groups; ++g) {
    __m512i qv[NA];
    for (int u = 0; u < NA; ++u) {
      qv[u] = _mm512_loadu_si512(qq + (g * qp16 + a0 + 16 * u) * 4);
      if constexpr (RowsBiased) qv[u] = _mm512_xor_si512(qv[u], _mm512_set1_epi8(static_cast<char>(0x80)));
    }
    for (int i = 0; i < T; ++i) {
      uint32_t w;
      std::memcpy(&w, rows + i * d + 4 * g, sizeof(w));
      if constexpr (FlipRows) w ^= 0x80808080u;
      const __m512i b = _mm512_set1_epi32(static_cast<int32_t>(w));
      for (int u = 0; u < NA; ++u) {
        if constexpr (RowsBiased)
          acc[i][u] = dpbusd(acc[i][u], b, qv[u]);
        else
          acc[i][u] = dpbusd(acc[i][u], qv[u], b);
      }
    }
  }
}

// T cells from c against query columns [a0, a0 + 16 * NA) of qq (vnni_dots), stored to St scaled as
// quantize.h says. Also: any[i] gets the lanes of columns < qlen at or above the threshold, bm (the block
// maxima of these columns) takes the cells whose list is not empty.
template <int T, int NA>
PLAIDX_VNNI_TARGET inline void vnni_tile(const uint8_t* qq, int64_t qp16, const float* qscale, int64_t qp,
                                         const CellCodes& vc, int64_t d, int64_t c, int64_t a0, float* St,
                                         __mmask16 (&any)[T], __m512 (&bm)[NA]) {
  __m512i acc[T][NA];
  vnni_dots<T, NA>(qq, qp16, vc.cq + c * d, d, a0, acc);
  const __m512 thr = _mm512_set1_ps(vc.threshold);
  for (int u = 0; u < NA; ++u) {
    const int64_t a = a0 + 16 * u;
    const int64_t left = qp - a, live = vc.qlen - a;
    const __mmask16 store = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    const __mmask16 cols = live >= 16 ? __mmask16(0xFFFF) : (live > 0 ? __mmask16((1u << live) - 1) : 0);
    const __m512 qs = _mm512_loadu_ps(qscale + a);
    for (int i = 0; i < T; ++i) {
      __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][u], _mm512_set1_epi32(128 * vc.rsum[c + i])));
      f = _mm512_mul_ps(_mm512_mul_ps(f, _mm512_set1_ps(vc.cscale[c + i])), qs);
      float* dst = St + (c + i) * qp + a;
      if (vc.stream && store == 0xFFFF && (reinterpret_cast<uintptr_t>(dst) & 63) == 0)
        _mm512_stream_ps(dst, f);
      else
        _mm512_mask_storeu_ps(dst, store, f);
      any[i] = static_cast<__mmask16>(any[i] | _mm512_mask_cmp_ps_mask(cols, f, thr, _CMP_GE_OQ));
      if (!vc.empty[c + i]) bm[u] = _mm512_max_ps(f, bm[u]);  // f > m ? f : m, as vmax_update
    }
  }
}

template <int T>
PLAIDX_VNNI_TARGET inline void vnni_rows(const uint8_t* qq, int64_t qp16, const float* qscale, int64_t qp,
                                         const CellCodes& vc, int64_t d, int64_t c, float* St, uint8_t* keep,
                                         float* bmax) {
  __mmask16 any[T];
  for (int i = 0; i < T; ++i) any[i] = 0;
  for (int64_t a0 = 0; a0 < qp; a0 += 32) {
    if (a0 + 16 < qp) {
      __m512 bm[2] = {_mm512_loadu_ps(bmax + a0), _mm512_loadu_ps(bmax + a0 + 16)};
      vnni_tile<T, 2>(qq, qp16, qscale, qp, vc, d, c, a0, St, any, bm);
      _mm512_storeu_ps(bmax + a0, bm[0]);
      _mm512_storeu_ps(bmax + a0 + 16, bm[1]);
    } else {
      __m512 bm[1] = {_mm512_loadu_ps(bmax + a0)};
      vnni_tile<T, 1>(qq, qp16, qscale, qp, vc, d, c, a0, St, any, bm);
      _mm512_storeu_ps(bmax + a0, bm[0]);
    }
  }
  for (int i = 0; i < T; ++i) keep[c + i] = any[i] != 0 ? 1 : 0;
}

// Cells [c0, c1) (c0 a multiple of kCellBlock) of St, keep and bmax: the quantised cell scores (the same
// values as score_cells_q) and what summarise_cells would derive from them.
PLAIDX_VNNI_TARGET void score_cells_vnni(const uint8_t* qq, const float* qscale, int64_t qp, const CellCodes& vc,
                                         int64_t d, int64_t c0, int64_t c1, float* St, uint8_t* keep,
                                         float* bmax) {
  const int64_t qp16 = (qp + 15) / 16 * 16;
  float block[kMaxQp16];  // one block's maxima, padded to qp16 columns
  for (int64_t b = c0; b < c1; b += kCellBlock) {
    const int64_t e = std::min(b + kCellBlock, c1);
    std::fill(block, block + qp16, kNegInf);
    int64_t c = b;
    for (; c + 8 <= e; c += 8) vnni_rows<8>(qq, qp16, qscale, qp, vc, d, c, St, keep, block);
    for (; c < e; ++c) vnni_rows<1>(qq, qp16, qscale, qp, vc, d, c, St, keep, block);
    std::copy(block, block + qp, bmax + b / kCellBlock * qp);
  }
  if (vc.stream) _mm_sfence();  // the streamed rows are visible before the other threads read St
}
// T int8 rows (scales vs) against query columns [a0, a0 + 16 * NA): the quantised scores
// (float(dot) * vs[i]) * qscale[a], folded into the running maxima m ("f > m ? f : m", tokens ascending).
// The rows' bytes are taken as int8 + 128 (the exact stage stores them so; Signed: kept int8 rows, flipped
// as they are read), so the offset 128 * qsum[a] (the query columns' sums) comes off each column.
template <int T, int NA, bool Signed>
PLAIDX_VNNI_TARGET inline void vnni_rows_tile(const uint8_t* qq, int64_t qp16, const float* qscale,
                                              const int32_t* qsum, const int8_t* rows, const float* vs, int64_t d,
                                              int64_t a0, __m512 (&m)[NA]) {
  __m512i acc[T][NA];
  vnni_dots<T, NA, true, Signed>(qq, qp16, rows, d, a0, acc);
  for (int u = 0; u < NA; ++u) {
    const __m512 qs = _mm512_loadu_ps(qscale + a0 + 16 * u);
    const __m512i off = _mm512_slli_epi32(_mm512_loadu_si512(qsum + a0 + 16 * u), 7);
    for (int i = 0; i < T; ++i) {
      __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][u], off));
      f = _mm512_mul_ps(_mm512_mul_ps(f, _mm512_set1_ps(vs[i])), qs);
      m[u] = _mm512_max_ps(f, m[u]);  // f > m ? f : m, as vmax_update
    }
  }
}

template <int NA, bool Signed>
PLAIDX_VNNI_TARGET inline void vnni_rows_columns(const uint8_t* qq, int64_t qp16, const float* qscale,
                                                 const int32_t* qsum, const int8_t* rows, const float* vs, int64_t nt,
                                                 int64_t d, int64_t a0, float* run_max) {
  __m512 m[NA];
  for (int u = 0; u < NA; ++u) m[u] = _mm512_loadu_ps(run_max + a0 + 16 * u);
  int64_t t = 0;
  for (; t + 8 <= nt; t += 8) vnni_rows_tile<8, NA, Signed>(qq, qp16, qscale, qsum, rows + t * d, vs + t, d, a0, m);
  for (; t < nt; ++t) vnni_rows_tile<1, NA, Signed>(qq, qp16, qscale, qsum, rows + t * d, vs + t, d, a0, m);
  for (int u = 0; u < NA; ++u) _mm512_storeu_ps(run_max + a0 + 16 * u, m[u]);
}

template <bool Signed>
PLAIDX_VNNI_TARGET inline void vnni_rows_max(const uint8_t* qq, int64_t qp16, const float* qscale, const int32_t* qsum,
                                             const int8_t* rows, const float* vs, int64_t nt, int64_t d,
                                             float* run_max) {
  for (int64_t a0 = 0; a0 < qp16; a0 += 32) {
    if (a0 + 16 < qp16)
      vnni_rows_columns<2, Signed>(qq, qp16, qscale, qsum, rows, vs, nt, d, a0, run_max);
    else
      vnni_rows_columns<1, Signed>(qq, qp16, qscale, qsum, rows, vs, nt, d, a0, run_max);
  }
}

// run_max (qp16,) = running maxima over the kept int8 rows (nt, d) of one document: the values max_dots_q
// gives. qsum (qp16,): the query columns' sums.
PLAIDX_VNNI_TARGET void kept_max_vnni(const uint8_t* qq, int64_t qp16, const float* qscale, const int32_t* qsum,
                                      const int8_t* rows, const float* vs, int64_t nt, int64_t d, float* run_max) {
  vnni_rows_max<true>(qq, qp16, qscale, qsum, rows, vs, nt, d, run_max);
}

// The same over the exact stage's biased rows (int8 + 128).
PLAIDX_VNNI_TARGET void exact_max_vnni(const uint8_t* qq, int64_t qp16, const float* qscale, const int32_t* qsum,
                                       const int8_t* rows, const float* vs, int64_t nt, int64_t d, float* run_max) {
  vnni_rows_max<false>(qq, qp16, qscale, qsum, rows, vs, nt, d, run_max);
}

// quantize_unit_rows of the n <= kQuantBlock rows of x (n, d), given each row's max_j |x_j| and sum of squares
// (peak, sq: the 16-lane sums of decode2_avx512 or unit_row_stats): the same bytes as the generic copy
// (cvtps rounds to nearest even, as nearbyint in the default mode; |x_j| <= p makes the products round into
// [-127, 127], so no clamp is needed); the norm is summed in 16 lanes, so a scale may differ from the generic
// copy's in the last bit. Every row's 127 / p and scale are computed at once, so that no row waits on its
// own division. The bytes are stored + 128 (xor 0x80: exact_max_vnni's rows).
PLAIDX_VNNI_TARGET void quantize_with_stats(const float* x, int64_t n, int64_t d, const float* peak, const float* sq,
                                            int8_t* q, float* scale) {
  const __m128i bias = _mm_set1_epi8(static_cast<char>(0x80));
  alignas(64) float inv[kQuantBlock];
  const __mmask16 tail = d % 16 == 0 ? __mmask16{0xFFFF} : __mmask16{0x00FF};
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 p = _mm512_max_ps(_mm512_maskz_loadu_ps(k, peak + i), _mm512_set1_ps(1e-30f));
    const __m512 norm = _mm512_max_ps(_mm512_sqrt_ps(_mm512_maskz_loadu_ps(k, sq + i)), _mm512_set1_ps(1e-12f));
    _mm512_mask_storeu_ps(inv + i, k, _mm512_div_ps(_mm512_set1_ps(127.0f), p));
    _mm512_mask_storeu_ps(scale + i, k, _mm512_div_ps(_mm512_div_ps(p, _mm512_set1_ps(127.0f)), norm));
  }
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * d;
    const __m512 f = _mm512_set1_ps(inv[i]);
    int64_t j = 0;
    for (; j + 16 <= d; j += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i * d + j),
                       _mm_xor_si128(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row + j), f))),
                                     bias));
    if (j < d)
      _mm_mask_storeu_epi8(q + i * d + j, static_cast<__mmask16>(tail),
                           _mm_xor_si128(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(
                                             _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, row + j), f))),
                                         bias));
  }
}

// peak[i] = max_j |x_j| and sq[i] = sum_j x_j^2 of the n rows of x (n, d), summed as decode2_avx512 does.
PLAIDX_VNNI_TARGET void unit_row_stats(const float* x, int64_t n, int64_t d, float* peak, float* sq) {
  const __mmask16 tail = d % 16 == 0 ? __mmask16{0xFFFF} : __mmask16{0x00FF};
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * d;
    __m512 m = _mm512_setzero_ps(), ss = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
      const __m512 v = _mm512_loadu_ps(row + j);
      m = _mm512_max_ps(m, _mm512_abs_ps(v));
      ss = _mm512_fmadd_ps(v, v, ss);
    }
    if (j < d) {
      const __m512 v = _mm512_maskz_loadu_ps(tail, row + j);
      m = _mm512_max_ps(m, _mm512_abs_ps(v));
      ss = _mm512_fmadd_ps(v, v, ss);
    }
    peak[i] = _mm512_reduce_max_ps(m);
    sq[i] = _mm512_reduce_add_ps(ss);
  }
}

// ---- AMX (Intel Advanced Matrix Extensions, Sapphire Rapids and later): the cell scores as tile products.
// The centroids' int8 rows are the A operand as stored (16 cells x 64 dimensions per tile, row stride d), the
// signed query in the VNNI layout the B operand (qa: (d / 4, qp16, 4) bytes; a tile is 16 groups of 4
// dimensions x 16 query columns), so a C tile is 16 cells x 16 columns of exact int32 dot products, St's
// layout: the same integers as vnni_dots (without its offset), scaled and summarised as vnni_tile does, so the
// same St, keep and block maxima bit for bit. 32 cells x 32 columns per step (eight tiles: four C, two A, two
// B). Needs d % 64 == 0; PLAIDX_AMX=0 turns it off (the VNNI kernel then runs).
#define PLAIDX_AMX_TARGET \
  __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

// Whether AMX-INT8 runs here: the CPU has it, the OS saves its state and lets this process use it (Linux asks
// per process, arch_prctl ARCH_REQ_XCOMP_PERM), the dispatch is not capped below AVX-512, PLAIDX_AMX is not 0.
inline bool have_amx() {
  static const bool ok = [] {
#if defined(__linux__) && defined(SYS_arch_prctl)
    if (!have_vnni()) return false;
    const char* env = std::getenv("PLAIDX_AMX");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 24) & 1u) || !((d >> 25) & 1u)) return false;  // AMX-TILE, AMX-INT8
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1u)) return false;  // OSXSAVE
    uint32_t lo = 0, hi = 0;
    asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return false;  // XTILECFG and XTILEDATA enabled
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// The tiles as every AMX kernel here uses them (16 rows of 64 bytes each), for the calling thread. The compiler
// does not see ldtilecfg read the configuration, so an empty asm with a memory clobber keeps its stores.
PLAIDX_AMX_TARGET void amx_configure() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}
PLAIDX_AMX_TARGET void amx_release() { _tile_release(); }

// Cells [c0, c1) (c0 a multiple of kCellBlock) of St, keep and bmax, as score_cells_vnni; the cells past the
// last whole group of 32 in each block go to vnni_rows.
PLAIDX_AMX_TARGET void score_cells_amx(const uint8_t* qq, const int8_t* qa, const float* qscale, int64_t qp,
                                       const CellCodes& vc, int64_t d, int64_t c0, int64_t c1, float* St,
                                       uint8_t* keep, float* bmax) {
  const int64_t qp16 = (qp + 15) / 16 * 16;
  amx_configure();
  alignas(64) int32_t out[2][2][16][16];  // [cell half][column half][cell][column]
  float block[kMaxQp16];
  const __m512 thr = _mm512_set1_ps(vc.threshold);
  for (int64_t b = c0; b < c1; b += kCellBlock) {
    const int64_t e = std::min(b + kCellBlock, c1);
    std::fill(block, block + qp16, kNegInf);
    int64_t c = b;
    for (; c + 32 <= e; c += 32) {
      __mmask16 any[32] = {};
      for (int64_t a0 = 0; a0 < qp16; a0 += 32) {
        const bool two = a0 + 16 < qp16;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t k = 0; k < d; k += 64) {
          _tile_loadd(4, vc.cq + c * d + k, d);
          _tile_loadd(5, vc.cq + (c + 16) * d + k, d);
          _tile_loadd(6, qa + ((k / 4) * qp16 + a0) * 4, qp16 * 4);
          _tile_dpbssd(0, 4, 6);
          _tile_dpbssd(2, 5, 6);
          if (two) {
            _tile_loadd(7, qa + ((k / 4) * qp16 + a0 + 16) * 4, qp16 * 4);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(3, 5, 7);
          }
        }
        _tile_stored(0, out[0][0], 64);
        _tile_stored(2, out[1][0], 64);
        if (two) {
          _tile_stored(1, out[0][1], 64);
          _tile_stored(3, out[1][1], 64);
        }
        for (int u = 0; u < (two ? 2 : 1); ++u) {
          const int64_t a = a0 + 16 * u;
          const int64_t left = qp - a, live = vc.qlen - a;
          const __mmask16 store = left >= 16 ? __mmask16(0xFFFF) : (left > 0 ? __mmask16((1u << left) - 1) : 0);
          const __mmask16 cols = live >= 16 ? __mmask16(0xFFFF) : (live > 0 ? __mmask16((1u << live) - 1) : 0);
          const __m512 qs = _mm512_loadu_ps(qscale + a);
          __m512 bm = _mm512_loadu_ps(block + a);
          for (int i = 0; i < 32; ++i) {
            const int64_t cell = c + i;
            __m512 f = _mm512_cvtepi32_ps(_mm512_load_si512(out[i / 16][u][i % 16]));
            f = _mm512_mul_ps(_mm512_mul_ps(f, _mm512_set1_ps(vc.cscale[cell])), qs);
            _mm512_mask_storeu_ps(St + cell * qp + a, store, f);
            any[i] = static_cast<__mmask16>(any[i] | _mm512_mask_cmp_ps_mask(cols, f, thr, _CMP_GE_OQ));
            if (!vc.empty[cell]) bm = _mm512_max_ps(f, bm);
          }
          _mm512_storeu_ps(block + a, bm);
        }
      }
      for (int i = 0; i < 32; ++i) keep[c + i] = any[i] != 0 ? 1 : 0;
    }
    for (; c + 8 <= e; c += 8) vnni_rows<8>(qq, qp16, qscale, qp, vc, d, c, St, keep, block);
    for (; c < e; ++c) vnni_rows<1>(qq, qp16, qscale, qp, vc, d, c, St, keep, block);
    std::copy(block, block + qp, bmax + b / kCellBlock * qp);
  }
  _tile_release();
}

// One group of 16 int8 rows (row stride d) against the signed query qa: dots (16, qp16) = their exact int32 dot
// products with every query column, 32 columns per step (C tiles 0 and 1, A tile 2, B tiles 4 and 5).
PLAIDX_AMX_TARGET inline void amx_group_dots(const int8_t* qa, int64_t qp16, const int8_t* rows, int64_t d,
                                             int32_t* dots) {
  for (int64_t a0 = 0; a0 < qp16; a0 += 32) {
    const bool two = a0 + 16 < qp16;
    _tile_zero(0);
    _tile_zero(1);
    for (int64_t k = 0; k < d; k += 64) {
      _tile_loadd(2, rows + k, d);
      _tile_loadd(4, qa + ((k / 4) * qp16 + a0) * 4, qp16 * 4);
      _tile_dpbssd(0, 2, 4);
      if (two) {
        _tile_loadd(5, qa + ((k / 4) * qp16 + a0 + 16) * 4, qp16 * 4);
        _tile_dpbssd(1, 2, 5);
      }
    }
    _tile_stored(0, dots + a0, qp16 * 4);
    if (two) _tile_stored(1, dots + a0 + 16, qp16 * 4);
  }
}

// The first n rows of a group (dots (16, qp16), scales vs, owner: each row's document) folded into their
// documents' maxima in order; run_max holds the maxima of document `current`, whose score goes to out when the
// next one starts.
PLAIDX_AMX_TARGET inline void amx_fold_rows(const int32_t* dots, int64_t qp16, const float* qscale, int64_t qlen,
                                            const float* vs, const int64_t* owner, int n, int64_t& current,
                                            float* run_max, float* out) {
  for (int r = 0; r < n; ++r) {
    if (owner[r] != current) {
      if (current >= 0) out[current] = sum_first(run_max, qlen);
      current = owner[r];
      for (int64_t a = 0; a < qp16; ++a) run_max[a] = kNegInf;
    }
    const __m512 s = _mm512_set1_ps(vs[r]);
    const int32_t* row = dots + r * qp16;
    for (int64_t a = 0; a < qp16; a += 16) {
      const __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(row + a)), s),
                                     _mm512_loadu_ps(qscale + a));
      _mm512_storeu_ps(run_max + a, _mm512_max_ps(f, _mm512_loadu_ps(run_max + a)));  // f > m ? f : m
    }
  }
}

// The next group of the row stream of documents docs[0:count): up to 16 rows, a document's 16 rows where they
// lie (rows) or gathered into buf (rows == nullptr), each with its scale and document (owner).
struct RowGroup {
  const int8_t* rows;  // a document's 16 consecutive rows, or nullptr: the group is in its buffer
  int n;               // rows in the group (16 but at the end of the stream; 0: the stream is done)
  float vs[16];
  int64_t owner[16];
};

struct RowStream {
  const int64_t* doc_offsets;
  const int8_t* q;
  const float* scale;
  int64_t d;
  const int64_t* docs;
  int64_t count;
  int64_t i = 0, t = -1;  // the document and row the stream is at (t == -1: document i not started)

  // The next group into g, its gathered rows into buf ((16, d) bytes, padded with zero rows), copied 64 bytes
  // at a time (d % 64 == 0). A document without rows scores 0. (Asking the cache for the rows of documents
  // ahead cost more than it saved where the rows sat in the last-level cache, as a benchmark's repeated
  // queries leave them: 1.03x the tier's p50 on Tatoeba.)
  PLAIDX_AMX_TARGET void next(RowGroup& g, int8_t* buf, float* out) {
    g.n = 0;
    g.rows = nullptr;
    while (g.n < 16 && i < count) {
      if (t < 0) t = doc_offsets[docs[i]];
      const int64_t hi = doc_offsets[docs[i] + 1];
      if (t >= hi) {
        if (t == doc_offsets[docs[i]]) out[i] = 0.0f;
        ++i;
        t = -1;
        continue;
      }
      if (g.n == 0 && hi - t >= 16) {  // a whole group of this document's rows, where they lie
        g.rows = q + t * d;
        for (int r = 0; r < 16; ++r) {
          g.vs[r] = scale[t + r];
          g.owner[r] = i;
        }
        g.n = 16;
        t += 16;
        return;
      }
      const int64_t take = std::min<int64_t>(16 - g.n, hi - t);
      for (int64_t r = 0; r < take; ++r) {
        const int8_t* src = q + (t + r) * d;
        int8_t* dst = buf + (g.n + r) * d;
        for (int64_t b = 0; b < d; b += 64) _mm512_storeu_si512(dst + b, _mm512_loadu_si512(src + b));
        g.vs[g.n + r] = scale[t + r];
        g.owner[g.n + r] = i;
      }
      g.n += static_cast<int>(take);
      t += take;
    }
    if (g.n > 0 && g.n < 16) std::memset(buf + g.n * d, 0, static_cast<size_t>((16 - g.n) * d));
  }
};

// out[i] = the tier's score of document docs[i], i in [0, count), over its kept int8 rows (q, scale) by tile
// products (amx_configure first): the documents' rows are taken in order, 16 at a time, so that documents
// shorter than 16 rows share groups instead of each going through the VNNI kernel row by row (a sentence of
// ten tokens cost ten VNNI rows, 0.7 us at d 384). A group of 16 rows of one document is loaded where it
// lies; the others are gathered into a buffer, the next group's before the current one's products run (two
// buffers), so that the tile load does not wait on the stores of its own rows (0.8x the time with the rows in
// cache, 0.97x without). Each row's scores are folded into its document's maxima in token order, as the VNNI
// kernel folds them (kept_max_vnni), so out[i] is the same float. run_max: qp16 floats of scratch. On Tatoeba
// (2,048 sentences of 10 tokens re-scored, d 384) the tier's last stage took about two thirds of the time it
// took with the VNNI kernel.
PLAIDX_AMX_TARGET void kept_scores_amx(const int8_t* qa, int64_t qp16, const float* qscale, int64_t qlen,
                                       const int64_t* doc_offsets, const int8_t* q, const float* scale, int64_t d,
                                       const int64_t* docs, int64_t count, float* out, float* run_max) {
  std::vector<int8_t> bufs(static_cast<size_t>(2 * 16 * d));
  std::vector<int32_t> dots(static_cast<size_t>(16 * qp16));
  RowStream stream{doc_offsets, q, scale, d, docs, count};
  RowGroup groups[2];
  int cur = 0;
  stream.next(groups[cur], bufs.data(), out);
  int64_t current = -1;  // the document whose maxima run_max holds
  while (groups[cur].n > 0) {
    const int nxt = 1 - cur;
    stream.next(groups[nxt], bufs.data() + nxt * 16 * d, out);
    const RowGroup& g = groups[cur];
    amx_group_dots(qa, qp16, g.rows != nullptr ? g.rows : bufs.data() + cur * 16 * d, d, dots.data());
    amx_fold_rows(dots.data(), qp16, qscale, qlen, g.vs, g.owner, g.n, current, run_max, out);
    cur = nxt;
  }
  if (current >= 0) out[current] = sum_first(run_max, qlen);
}
#undef PLAIDX_AMX_TARGET
PLAIDX_VNNI_DIAGNOSTICS_POP
#else
inline bool have_amx() { return false; }
#endif

// run_max (qp,) = running maxima over one document's kept int8 rows (nt, d), scales vs (nt,), against the
// quantised query (Qf (d, qp): its int8 values as floats, qscale): generic copy of kept_max_vnni.
template <Isa I>
PLAIDX_INLINE void kept_max_q_impl(const float* Qf, const float* qscale, int64_t qp, const int8_t* rows,
                                   const float* vs, int64_t nt, int64_t d, float* run_max) {
  max_dots_q<WideVec<I>>(Qf, qscale, d, qp, rows, vs, nt, run_max);
}
PLAIDX_DISPATCH(void, kept_max_q,
                (const float* Qf, const float* qscale, int64_t qp, const int8_t* rows, const float* vs, int64_t nt,
                 int64_t d, float* run_max),
                (Qf, qscale, qp, rows, vs, nt, d, run_max))

// run_max (qp,) = running maxima over float rows V (nt, d) against Qt (d, qp): max_dots of this copy, the
// kernel maxsim runs (so the float16 tier scores as maxsim does over the converted rows, bit for bit).
template <Isa I>
PLAIDX_INLINE void float_max_impl(const float* Qt, int64_t d, int64_t qp, const float* V, int64_t nt,
                                  float* run_max) {
  max_dots<WideVec<I>>(Qt, d, qp, V, nt, run_max);
}
PLAIDX_DISPATCH(void, float_max,
                (const float* Qt, int64_t d, int64_t qp, const float* V, int64_t nt, float* run_max),
                (Qt, d, qp, V, nt, run_max))


#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx,f16c"))) void halves_to_floats_f16c(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) out[i] = half_to_float(h[i]);
}
#endif

// out[0:n) = the float16 values h[0:n) as float32 (exact: vcvtph2ps where the CPU has F16C).
void halves_to_floats(const uint16_t* h, int64_t n, float* out) {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  if (f16c) {
    halves_to_floats_f16c(h, n, out);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(h[i]);
}

// Cells [c0, c1) (c0 a multiple of kCellBlock) of St: keep[c] = max_{a < qlen} St[c, a] >= threshold, and
// for each block, bmax[block, a] = max of St[c, a] over its cells with a non-empty list (-inf for none).
template <Isa I>
PLAIDX_INLINE void summarise_cells_impl(const float* St, int64_t qlen, const uint8_t* empty, int64_t c0,
                                        int64_t c1, double threshold, uint8_t* keep, float* bmax) {
  const int64_t qp = padded_qlen(qlen);
  // With a positive threshold the padding columns (0) cannot reach it, so whole rows may be used.
  const bool whole_rows = qp == qlen || threshold > 0.0;
  for (int64_t b = c0; b < c1; b += kCellBlock) {
    const int64_t e = std::min(b + kCellBlock, c1);
    float* m = bmax + b / kCellBlock * qp;
    std::fill(m, m + qp, kNegInf);
    for (int64_t c = b; c < e; ++c) {
      const float* row = St + c * qp;
      float best = kNegInf;
      if (whole_rows) {
        v8f r = vload(kNegInfRow);  // a NaN never replaces a maximum, so none may start one
        for (int64_t a = 0; a < qp; a += 8) r = vmax_update(r, vload(row + a));
        for (int i = 0; i < 8; ++i) best = vlane(r, i) > best ? vlane(r, i) : best;
      } else {
        for (int64_t a = 0; a < qlen; ++a) best = row[a] > best ? row[a] : best;
      }
      keep[c] = static_cast<double>(best) >= threshold ? 1 : 0;
      if (!empty[c])
        for (int64_t a = 0; a < qp; a += 8) vstore(m + a, vmax_update(vload(m + a), vload(row + a)));
    }
  }
}
PLAIDX_DISPATCH(void, summarise_cells,
                (const float* St, int64_t qlen, const uint8_t* empty, int64_t c0, int64_t c1, double threshold,
                 uint8_t* keep, float* bmax),
                (St, qlen, empty, c0, c1, threshold, keep, bmax))

// The np best cells of query column a of St (nlist, qp), cells with empty[c] ranking as -inf, with the
// contract's order (score descending, then cell ascending), appended to out in any order. np < nlist.
// Exact by construction: the np-th largest block maximum L is a lower bound of the np-th best score
// (each of those np blocks holds a cell scoring its maximum), so blocks whose maximum is below L hold no
// winner and are skipped; the rest are scanned in ascending cell order with a sorted buffer. A column
// with fewer than np finite scores in non-empty cells (NaN queries, mostly empty indexes) falls back to
// a scan of every cell.
void probe_column(const float* St, int64_t qp, int64_t a, const float* bmax, int64_t nblocks,
                  const uint8_t* empty, int64_t nlist, int64_t np, std::vector<float>& keys,
                  std::vector<int64_t>& out) {
  auto value = [&](int64_t c) { return empty[c] ? kNegInf : St[c * qp + a]; };
  if (np > kProbeBuffer) {
    std::vector<Scored> items(static_cast<size_t>(nlist));
    for (int64_t c = 0; c < nlist; ++c) items[c] = Scored{value(c), c};
    keep_top(items, np);
    for (const Scored& it : items) out.push_back(it.doc);
    return;
  }
  Scored best[kProbeBuffer];
  int64_t m = 0;
  // Cells arrive in ascending order, so once the buffer is full a later cell enters only with a key
  // strictly above the worst kept key.
  auto offer = [&](float x, int64_t c) {
    if (m == np && !(rank_key(x) > rank_key(best[np - 1].score))) return;
    int64_t i = m < np ? m++ : np - 1;
    while (i > 0 && ranks_before(x, c, best[i - 1].score, best[i - 1].doc)) {
      best[i] = best[i - 1];
      --i;
    }
    best[i] = Scored{x, c};
  };
  float bound = kNegInf;
  if (np <= nblocks && np <= kSmallProbe) {  // the np largest block maxima in a small sorted buffer
    float top[kSmallProbe];
    std::fill(top, top + np, kNegInf);
    for (int64_t b = 0; b < nblocks; ++b) {
      const float x = bmax[b * qp + a];
      if (!(x > top[np - 1])) continue;
      int64_t i = np - 1;
      for (; i > 0 && x > top[i - 1]; --i) top[i] = top[i - 1];
      top[i] = x;
    }
    bound = top[np - 1];
  } else if (np <= nblocks) {
    keys.resize(static_cast<size_t>(nblocks));
    for (int64_t b = 0; b < nblocks; ++b) keys[b] = bmax[b * qp + a];
    std::nth_element(keys.begin(), keys.begin() + (np - 1), keys.end(), std::greater<float>());
    bound = keys[np - 1];
  }
  for (int64_t b = 0; b < nblocks; ++b) {
    const float bm = bmax[b * qp + a];
    if (!(bm > kNegInf) || bm < bound) continue;
    const int64_t e = std::min(nlist, (b + 1) * kCellBlock);
    for (int64_t c = b * kCellBlock; c < e; ++c) {
      const float x = value(c);
      if (rank_key(x) > kNegInf) offer(x, c);
    }
  }
  if (m < np) {  // fewer than np finite candidates: rank every cell, -inf ones by cell
    m = 0;
    for (int64_t c = 0; c < nlist; ++c) offer(value(c), c);
  }
  for (int64_t i = 0; i < m; ++i) out.push_back(best[i].doc);
}

// Per document, the cells its centroid scores are read from: the tokens' codes (ids = codes, offsets =
// doc_offsets) or each document's distinct cells (IvfView::cells): the same maxima, fewer rows read.
template <class Code>
struct CellLists {
  const Code* ids;
  const int64_t* offsets;  // (ndocs + 1,)
  int64_t total;

  // [lo, hi) of document doc; throws on offsets that leave [0, total] or decrease.
  void span(int64_t doc, int64_t& lo, int64_t& hi) const {
    lo = offsets[doc];
    hi = offsets[doc + 1];
    if (lo < 0 || hi < lo || hi > total)
      throw std::invalid_argument("doc_cells: the offsets of document " + std::to_string(doc) +
                                  " are out of order; rebuild them with doc_cells");
  }
};

// The candidates' cell lists are read in ascending document order but far apart (a few hundred bytes each,
// gaps of kilobytes at 100M tokens), so the hardware prefetcher does not see them coming: the centroid passes
// ask for the list kListsAhead documents ahead (its offsets twice as far ahead).
constexpr int64_t kListsAhead = 8;

template <class Code>
PLAIDX_INLINE void prefetch_list(const CellLists<Code>& lists, const int64_t* docs, int64_t i, int64_t count) {
  if (i + 2 * kListsAhead < count)
    prefetch_bytes(reinterpret_cast<const uint8_t*>(lists.offsets + docs[i + 2 * kListsAhead]), 1, 2 * 8);
  if (i + kListsAhead < count) {
    const int64_t doc = docs[i + kListsAhead];
    const int64_t lo = lists.offsets[doc], hi = lists.offsets[doc + 1];
    if (lo >= 0 && lo <= hi && hi <= lists.total)
      prefetch_bytes(reinterpret_cast<const uint8_t*>(lists.ids + lo), hi - lo, static_cast<int64_t>(sizeof(Code)));
  }
}

// The score rows a document reads are scattered over St (a megabyte at 16,384 cells of 16 query tokens), and
// half of them were written by the other thread of the cell stage: the centroid passes ask for the rows of the
// document kRowsAhead ahead, whose list came kListsAhead - kRowsAhead documents earlier (the stage took 0.9x
// the time on Tatoeba's tier, 4,194 candidates).
constexpr int64_t kRowsAhead = 4;

template <class Code>
PLAIDX_INLINE void prefetch_rows(const CellLists<Code>& lists, const int64_t* docs, int64_t i, int64_t count,
                                 const float* St, int64_t qp, int64_t nlist) {
  if (i + kRowsAhead >= count) return;
  const int64_t doc = docs[i + kRowsAhead];
  const int64_t lo = lists.offsets[doc], hi = lists.offsets[doc + 1];
  if (lo < 0 || lo > hi || hi > lists.total) return;  // (span throws when the document's turn comes)
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t c = static_cast<int64_t>(lists.ids[t]);
    if (c < nlist) prefetch_bytes(reinterpret_cast<const uint8_t*>(St + c * qp), 1, 4 * qp);
  }
}

template <class Code>
CellLists<Code> cell_lists(const Compressed<Code>& col, const IvfView<Code>& ivf) {
  if (ivf.cells != nullptr) return CellLists<Code>{ivf.cells, ivf.cell_offsets, ivf.ncells};
  return CellLists<Code>{col.codes, col.doc_offsets, col.n};
}

// Centroid-score MaxSim of documents docs[0:count] over the kept cells (keep == nullptr: every cell).
// skipped (nullable): whether some cell of the document was left out. False on a cell id >= nlist.
template <Isa I, class Code>
PLAIDX_INLINE bool centroid_scores_impl(const float* St, int64_t qlen, int64_t nlist, const CellLists<Code>& lists,
                                        const int64_t* docs, int64_t count, const uint8_t* keep, float* out,
                                        uint8_t* skipped) {
  const int64_t qp = padded_qlen(qlen);
  float run_max_buf[256];
  std::vector<float> heap_buf;
  float* run_max = run_max_buf;
  if (qp > 256) {
    heap_buf.resize(static_cast<size_t>(qp));
    run_max = heap_buf.data();
  }
  for (int64_t i = 0; i < count; ++i) {
    prefetch_list(lists, docs, i, count);
    prefetch_rows(lists, docs, i, count, St, qp, nlist);
    int64_t lo, hi;
    lists.span(docs[i], lo, hi);
    std::fill(run_max, run_max + qp, kNegInf);
    const int64_t used = row_max_any(lists.ids + lo, hi - lo, St, nlist, qp, keep, run_max);
    if (used < 0) return false;
    out[i] = used > 0 ? sum_first(run_max, qlen) : 0.0f;
    if (skipped != nullptr) skipped[i] = used < hi - lo ? 1 : 0;
  }
  return true;
}
PLAIDX_DISPATCH_CODE(bool, centroid_scores,
                (const float* St, int64_t qlen, int64_t nlist, const CellLists<Code>& lists, const int64_t* docs,
                 int64_t count, const uint8_t* keep, float* out, uint8_t* skipped),
                (St, qlen, nlist, lists, docs, count, keep, out, skipped))

// Pruned (kept cells only) and full centroid-score MaxSim of documents docs[0:count] in one pass over
// their cells: the values centroid_scores gives with keep and with nullptr.
template <Isa I, class Code>
PLAIDX_INLINE bool centroid_scores_both_impl(const float* St, int64_t qlen, int64_t nlist,
                                             const CellLists<Code>& lists,
                                             const int64_t* docs, int64_t count, const uint8_t* keep, float* pruned,
                                             float* full) {
  const int64_t qp = padded_qlen(qlen);
  std::vector<float> buf(static_cast<size_t>(2 * qp));
  float* p = buf.data();
  float* f = p + qp;
  for (int64_t i = 0; i < count; ++i) {
    prefetch_list(lists, docs, i, count);
    prefetch_rows(lists, docs, i, count, St, qp, nlist);
    int64_t lo, hi;
    lists.span(docs[i], lo, hi);
    std::fill(p, p + 2 * qp, kNegInf);
    const int64_t used = row_max_both_any(lists.ids + lo, hi - lo, St, nlist, qp, keep, p, f);
    if (used < 0) return false;
    pruned[i] = used > 0 ? sum_first(p, qlen) : 0.0f;
    full[i] = hi > lo ? sum_first(f, qlen) : 0.0f;
  }
  return true;
}
PLAIDX_DISPATCH_CODE(bool, centroid_scores_both,
                (const float* St, int64_t qlen, int64_t nlist, const CellLists<Code>& lists, const int64_t* docs,
                 int64_t count, const uint8_t* keep, float* pruned, float* full),
                (St, qlen, nlist, lists, docs, count, keep, pruned, full))

[[noreturn]] void bad_code(int64_t nlist) {
  throw std::invalid_argument("codes: a centroid id is >= nlist (" + std::to_string(nlist) + ")");
}

int64_t count_doc_tokens(const int64_t* doc_offsets, const int64_t* docs, int64_t count) {
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) total += doc_offsets[docs[i] + 1] - doc_offsets[docs[i]];
  return total;
}

template <class Code>
int64_t count_tokens(const Compressed<Code>& col, const int64_t* docs, int64_t count) {
  return count_doc_tokens(col.doc_offsets, docs, count);
}

// fn(b, e) over chunks of the candidates docs[0:count], in parallel when the score rows they read are many
// and handed out dynamically (documents differ in length); fn returns false on a cell id >= nlist.
template <class Code, class F>
void over_candidates(const Compressed<Code>& col, const CellLists<Code>& lists, const int64_t* docs, int64_t count,
                     int threads, F&& fn) {
  if (threads > 1) threads = threads_for(count_doc_tokens(lists.offsets, docs, count), kMinCentroidRows, threads);
  parallel_chunks(
      count, std::max<int64_t>(16, grain_for(count, threads, 4)), threads,
      [&](int64_t b, int64_t e) {
        if (!fn(b, e)) bad_code(col.nlist);
      },
      Schedule::kDynamic);
}

template <class Code>
void centroid_scores_parallel(const float* St, int64_t qlen, const Compressed<Code>& col,
                              const CellLists<Code>& lists,
                              const int64_t* docs, int64_t count, const uint8_t* keep, float* out,
                              uint8_t* skipped, int threads) {
  over_candidates(col, lists, docs, count, threads, [&](int64_t b, int64_t e) {
    return centroid_scores(St, qlen, col.nlist, lists, docs + b, e - b, keep, out + b,
                           skipped != nullptr ? skipped + b : nullptr);
  });
}

template <class Code>
void centroid_scores_both_parallel(const float* St, int64_t qlen, const Compressed<Code>& col,
                                   const CellLists<Code>& lists,
                                   const int64_t* docs, int64_t count, const uint8_t* keep, float* pruned,
                                   float* full, int threads) {
  over_candidates(col, lists, docs, count, threads, [&](int64_t b, int64_t e) {
    return centroid_scores_both(St, qlen, col.nlist, lists, docs + b, e - b, keep, pruned + b, full + b);
  });
}

template <class Code>
void exact_scores_parallel(const float* Qt, int64_t qlen, const Compressed<Code>& col, const int64_t* docs,
                           int64_t count, float* out, int threads) {
  if (threads > 1) threads = threads_for(count_tokens(col, docs, count), kMinExactTokens, threads);
  parallel_chunks(
      count, std::max<int64_t>(1, grain_for(count, threads, 8)), threads,
      [&](int64_t b, int64_t e) { exact_scores(Qt, qlen, col, docs + b, e - b, out + b); }, Schedule::kDynamic);
}

// Keeps the best m of ws.items (doc = index into ws.cand, which ranks like the document because
// ws.cand is ascending) and returns them in ascending order.
void select_ascending(std::vector<Scored>& items, int64_t m) {
  keep_top(items, m);
  std::sort(items.begin(), items.end(), [](const Scored& x, const Scored& y) { return x.doc < y.doc; });
}

template <class Code>
struct SearchContext {
  const float* Q;   // (nq, qlen, d)
  const uint16_t* token_scales;  // exact_adc: (n,) float16 bits, each token's inverse norm (adc.h), or nullptr
  uint8_t* scales_done;          // exact_adc with token_scales derived on demand (adc.h), or nullptr
  const float* adc_peak;         // exact_adc: (d,) adc_table_peaks of col.table
  const float* Qt;  // (nq, d, qp)
  CellCodes cells;
  KeptRows kept;  // step 5 over the kept vectors (int8 or float16) instead of the decompressed tokens
  bool vnni;      // the quantised query in the avx512-vnni kernels' layout (else the generic copies')
  bool amx;       // (with vnni, d % 64 == 0) the AMX kernels run: the query also in qz.qa
  const float* S;          // (nq, qlen, nlist), or nullptr: scores computed from centroids
  const float* centroids;  // (nlist, d) when S is nullptr
  int64_t qlen;
  const Compressed<Code>& col;
  const IvfView<Code>& ivf;
  const uint8_t* empty;  // (nlist,): the cell's ivf list is empty
  const uint8_t* allowed;
  const SearchParams& p;
  float* out_scores;
  int64_t* out_docs;
  Candidates given;  // steps 1-2's candidates given (search.h), or none: the probes find them
};

// MaxSim of one query over documents' kept vectors (search.h: kept): int8 rows against the quantised query
// (qz), float16 rows converted exactly against Qt.
struct KeptScorer {
  const int64_t* doc_offsets;
  KeptRows kept;
  int64_t d, qlen;
  bool vnni;               // qz in the avx512-vnni kernel's layout
  bool amx;                // (with vnni) whole groups of 16 int8 rows by tile products (qz.qa)
  const QuantQuery* qz;    // int8 rows
  const float* Qt;         // float16 rows: the query transposed, (d, qp)
};

// The arrays of kept rows (int8 rows and their scales, or float16 rows) as pagein.h takes them; returns how many.
int kept_token_rows(const KeptRows& kept, int64_t d, TokenRows* out) {
  if (kept.int8.q != nullptr) {
    out[0] = TokenRows{kept.int8.q, d};
    out[1] = TokenRows{kept.int8.scale, static_cast<int64_t>(sizeof(float))};
    return 2;
  }
  if (kept.half == nullptr) return 0;
  out[0] = TokenRows{kept.half, 2 * d};
  return 1;
}

// out[i] = the score of document docs[i] for i in [0, count), in parallel over chunks of the documents.
void kept_scores_parallel(const KeptScorer& ks, const int64_t* docs, int64_t count, float* out, int threads) {
  const int64_t d = ks.d, qlen = ks.qlen, qp = padded_qlen(qlen), qp16 = (qp + 15) / 16 * 16;
  if (threads > 1) threads = threads_for(count_doc_tokens(ks.doc_offsets, docs, count), kMinKeptTokens, threads);
  parallel_chunks(
      count, std::max<int64_t>(1, grain_for(count, threads, 8)), threads,
      [&](int64_t b, int64_t e) {
        std::vector<float> run_max(static_cast<size_t>(qp16));
#if PLAIDX_HAVE_VNNI
        if (ks.amx && ks.kept.int8.q != nullptr) {
          amx_configure();
          kept_scores_amx(ks.qz->qa.data(), qp16, ks.qz->qscale.data(), qlen, ks.doc_offsets, ks.kept.int8.q,
                          ks.kept.int8.scale, d, docs + b, e - b, out + b, run_max.data());
          amx_release();
          return;
        }
#endif
        std::vector<float> buf(ks.kept.half != nullptr ? static_cast<size_t>(kHalfBlock * d) : 0);
        for (int64_t i = b; i < e; ++i) {
          const int64_t lo = ks.doc_offsets[docs[i]], hi = ks.doc_offsets[docs[i] + 1];
          std::fill(run_max.begin(), run_max.end(), kNegInf);
          if (ks.kept.half != nullptr) {
            for (int64_t t = lo; t < hi; t += kHalfBlock) {
              const int64_t nt = std::min(kHalfBlock, hi - t);
              halves_to_floats(ks.kept.half + t * d, nt * d, buf.data());
              float_max(ks.Qt, d, qp, buf.data(), nt, run_max.data());
            }
          } else {
            const int8_t* rows = ks.kept.int8.q + lo * d;
            const float* vs = ks.kept.int8.scale + lo;
#if PLAIDX_HAVE_VNNI
            if (ks.vnni)
              kept_max_vnni(ks.qz->qq.data(), qp16, ks.qz->qscale.data(), ks.qz->qsum.data(), rows, vs, hi - lo, d,
                            run_max.data());
            else
#endif
              kept_max_q(ks.qz->qf.data(), ks.qz->qscale.data(), qp, rows, vs, hi - lo, d, run_max.data());
          }
          out[i] = hi > lo ? sum_first(run_max.data(), qlen) : 0.0f;
        }
      },
      Schedule::kDynamic);
}

// out[i] = step 5's score of document docs[i] with exact_int8 (search.h): its tokens decoded, quantised as
// unit vectors (quantize_unit_rows) and scored like kept int8 rows; in parallel over chunks of the documents.
template <class Code>
void exact_q_scores_parallel(const Compressed<Code>& col, int64_t qlen, bool vnni, const QuantQuery& qz,
                             const int64_t* docs, int64_t count, float* out, int threads) {
  const int64_t d = col.d, qp = padded_qlen(qlen), qp16 = (qp + 15) / 16 * 16, pb = d * col.nbits / 8;
  if (threads > 1) threads = threads_for(count_doc_tokens(col.doc_offsets, docs, count), kMinExactTokens, threads);
#if PLAIDX_HAVE_VNNI
  const bool fused = vnni && col.nbits == 2 && have_decode2_avx512();
#endif
  parallel_chunks(
      count, std::max<int64_t>(1, grain_for(count, threads, 8)), threads,
      [&](int64_t b, int64_t e) {
        std::vector<float> run_max(static_cast<size_t>(qp16));
        std::vector<float> buf(static_cast<size_t>(kQuantBlock * d)), vs(static_cast<size_t>(kQuantBlock));
        std::vector<int8_t> rows(static_cast<size_t>(kQuantBlock * d));
#if PLAIDX_HAVE_VNNI
        alignas(64) float peak[kQuantBlock], sq[kQuantBlock];
#endif
        for (int64_t i = b; i < e; ++i) {
          const int64_t lo = col.doc_offsets[docs[i]], hi = col.doc_offsets[docs[i] + 1];
          std::fill(run_max.begin(), run_max.end(), kNegInf);
          for (int64_t t = lo; t < hi; t += kQuantBlock) {
            const int64_t nt = std::min(kQuantBlock, hi - t);
            prefetch_next_block(col, t + nt, hi, i + 1 < e ? docs[i + 1] : -1, kQuantBlock);
#if PLAIDX_HAVE_VNNI
            if (vnni) {
              if (fused) {  // nbits 2: the statistics come with the decoded rows
                if (!decode2_avx512(col.codes + t, col.packed + t * pb, nt, col.centroids, col.nlist, col.planes,
                                    col.table, col.levels, d, buf.data(), peak, sq))
                  bad_code(col.nlist);
              } else {
                decode_tokens(col, t, nt, buf.data());
                unit_row_stats(buf.data(), nt, d, peak, sq);
              }
              quantize_with_stats(buf.data(), nt, d, peak, sq, rows.data(), vs.data());
              exact_max_vnni(qz.qq.data(), qp16, qz.qscale.data(), qz.qsum.data(), rows.data(), vs.data(), nt, d,
                             run_max.data());
              continue;
            }
#endif
            decode_tokens(col, t, nt, buf.data());
            quantize_unit_rows(buf.data(), nt, d, rows.data(), vs.data());
            kept_max_q(qz.qf.data(), qz.qscale.data(), qp, rows.data(), vs.data(), nt, d, run_max.data());
          }
          out[i] = hi > lo ? sum_first(run_max.data(), qlen) : 0.0f;
        }
      },
      Schedule::kDynamic);
}

// The query's lookup table (adc.h) into ws: scales, the query transposed, then the table's rows, in parallel
// over the packed bytes when the table is large.
template <class Code>
void build_adc_table(const Compressed<Code>& col, const float* Qq, int64_t qlen, const float* peak, Workspace& ws,
                     int threads) {
  const int64_t d = col.d, qc = adc_columns(qlen), pb = d * col.nbits / 8;
  ws.adc_inv.resize(static_cast<size_t>(qc));
  ws.adc_u.resize(static_cast<size_t>(qc));
  adc_query_scales(Qq, qlen, d, col.nbits, peak, qc, ws.adc_inv.data(), ws.adc_u.data());
  ws.adc_qt.assign(static_cast<size_t>(d * qc), 0.0f);
  for (int64_t a = 0; a < qlen; ++a)
    for (int64_t j = 0; j < d; ++j) ws.adc_qt[static_cast<size_t>(j * qc + a)] = Qq[a * d + j];
  ws.lut.resize(static_cast<size_t>(pb * 256 * qc));
  const int t = threads_for(pb * 256 * qc * (8 / col.nbits), kMinAdcTable, threads);
  parallel_chunks(pb, (pb + t - 1) / t, t, [&](int64_t p0, int64_t p1) {
    adc_table_rows(ws.adc_qt.data(), qc, col.table, d, col.nbits, ws.adc_inv.data(), p0, p1, ws.lut.data());
  });
}

// out[i] = step 5's score of document docs[i] by the lookup table in ws (adc.h), in parallel over chunks of the
// documents.
template <class Code>
void adc_scores_parallel(const Compressed<Code>& col, int64_t qlen, const Workspace& ws, const float* St,
                         const uint16_t* scales, const int64_t* docs, int64_t count, float* out, int threads) {
  const int64_t qc = adc_columns(qlen), qp = padded_qlen(qlen);
  if (threads > 1)
    threads = threads_for(count_doc_tokens(col.doc_offsets, docs, count) * (col.d * col.nbits / 8), kMinAdcBytes,
                          threads);
  parallel_chunks(
      count, std::max<int64_t>(1, grain_for(count, threads, 8)), threads,
      [&](int64_t b, int64_t e) {
        std::vector<float> run_max(static_cast<size_t>(qc));
        for (int64_t i = b; i < e; ++i) {
          const int64_t lo = col.doc_offsets[docs[i]], hi = col.doc_offsets[docs[i] + 1];
          std::fill(run_max.begin(), run_max.end(), kNegInf);
          if (!adc_max(ws.lut.data(), qc, ws.adc_u.data(), St, qp, col, scales, lo, hi, run_max.data()))
            bad_code(col.nlist);
          out[i] = hi > lo ? sum_first(run_max.data(), qlen) : 0.0f;
        }
      },
      Schedule::kDynamic);
}

// The query q (qlen, d) quantised into qz in the layout of the kernels that run; throws on a value that is
// not finite.
void prepare_quantized_query(const float* Qq, int64_t qlen, int64_t d, bool vnni, QuantQuery& qz, bool amx = false) {
  const int64_t qp = padded_qlen(qlen), qp16 = (qp + 15) / 16 * 16;
  qz.qi.resize(static_cast<size_t>(qlen * d));
  qz.qscale.assign(static_cast<size_t>(qp16 + 16), 0.0f);
  if (vnni) qz.qsum.assign(static_cast<size_t>(qp16), 0);
  if (!quantize_rows(Qq, qlen, d, qz.qi.data(), qz.qscale.data(), vnni ? qz.qsum.data() : nullptr))
    throw std::invalid_argument("search: quantised scores (cell_codes, kept, exact_int8) need finite query values");
  if (amx) {  // qa: the same layout without the offset
    qz.qa.assign(static_cast<size_t>(d / 4 * qp16 * 4), int8_t{0});
    for (int64_t a = 0; a < qlen; ++a)
      for (int64_t g = 0; g < d / 4; ++g)
        std::memcpy(qz.qa.data() + (g * qp16 + a) * 4, qz.qi.data() + a * d + 4 * g, 4);
  }
  if (vnni) {  // qq[((j / 4) * qp16 + a) * 4 + j % 4] = qi[a, j] + 128: 4 bytes at a time, each xor 0x80
    qz.qq.assign(static_cast<size_t>(d / 4 * qp16 * 4), uint8_t{128});
    for (int64_t a = 0; a < qlen; ++a)
      for (int64_t g = 0; g < d / 4; ++g) {
        uint32_t w;
        std::memcpy(&w, qz.qi.data() + a * d + 4 * g, sizeof(w));
        w ^= 0x80808080u;
        std::memcpy(qz.qq.data() + (g * qp16 + a) * 4, &w, sizeof(w));
      }
  } else {
    qz.qf.assign(static_cast<size_t>(d * qp), 0.0f);
    for (int64_t a = 0; a < qlen; ++a)
      for (int64_t j = 0; j < d; ++j) qz.qf[static_cast<size_t>(j * qp + a)] = static_cast<float>(qz.qi[a * d + j]);
  }
}

// Cells [c0, c1) of St (and, for the vnni kernel, of keep and bmax: see search_query).
void score_cells_quantized(const CellCodes& cc, Workspace& ws, int64_t qp, int64_t d, int64_t c0, int64_t c1,
                           float* St) {
#if PLAIDX_HAVE_VNNI
  if (cc.amx) {
    score_cells_amx(ws.qz.qq.data(), ws.qz.qa.data(), ws.qz.qscale.data(), qp, cc, d, c0, c1, St, ws.keep.data(),
                    ws.bmax.get());
    return;
  }
  if (cc.vnni) {
    score_cells_vnni(ws.qz.qq.data(), ws.qz.qscale.data(), qp, cc, d, c0, c1, St, ws.keep.data(), ws.bmax.get());
    return;
  }
#endif
  score_cells_q(ws.qz.qf.data(), ws.qz.qscale.data(), qp, cc.cq, cc.cscale, d, c0, c1, St);
}

// ws.cand = the allowed documents of ws.docs (those marked in ws.doc_seen), ascending; clears the marks. Where
// they are more than one in kScanShare of the collection (large indexes: tens of thousands of candidates), a
// scan of the marks in document order, eight at a time, is cheaper than sorting them.
constexpr int64_t kScanShare = 64;

void ascending_candidates(Workspace& ws, int64_t ndocs, const uint8_t* allowed) {
  ws.cand.clear();
  uint8_t* seen = ws.doc_seen.get();
  const auto list = [&](int64_t doc) {  // a marked document, listed where allowed
    if (allowed == nullptr || allowed[doc]) ws.cand.push_back(doc);
  };
  const auto take = [&](int64_t doc) {  // a marked document unmarked and listed; an unmarked one skipped
    if (seen[doc] == 0) return;
    seen[doc] = 0;
    list(doc);
  };
  if (static_cast<int64_t>(ws.docs.size()) * kScanShare < ndocs) {
    for (const int64_t doc : ws.docs) take(doc);
    std::sort(ws.cand.begin(), ws.cand.end());
    return;
  }
  // Marks are bytes of 0 or 1, so a word's set bits are its marked documents (bit 8j: document doc + j), taken
  // lowest first without a branch per byte (the marks fall at random: about half the time of testing each byte).
  int64_t doc = 0;
  constexpr uint64_t kClear = 0;
  for (; doc + 8 <= ndocs; doc += 8) {
    uint64_t word;
    std::memcpy(&word, seen + doc, sizeof(word));
    if (word == 0) continue;
    std::memcpy(seen + doc, &kClear, sizeof(kClear));
    for (; word != 0; word &= word - 1) list(doc + (__builtin_ctzll(word) >> 3));
  }
  for (; doc < ndocs; ++doc) take(doc);
}

// Step 5's rows of docs[0:m] paged in together where their maps are cold (pagein.h): the kept rows, or the
// tokens' codes and residual bytes (the lookup stage's inverse norms are derived into memory).
template <class Code>
void page_in_step5(const SearchContext<Code>& ctx, const int64_t* docs, int64_t m) {
  const Compressed<Code>& col = ctx.col;
  TokenRows rows[2];
  int n = kept_token_rows(ctx.kept, col.d, rows);
  if (n == 0) {
    rows[n++] = TokenRows{col.packed, col.d * col.nbits / 8};  // first: the sample's (its largest rows)
    rows[n++] = TokenRows{col.codes, static_cast<int64_t>(sizeof(Code))};
  }
  page_in_rows(rows, n, col.doc_offsets, docs, m);
}

// Step 1's probes and step 2: ws.cand = the allowed documents of the probed cells' lists, ascending.
template <class Code>
void probe_candidates(const SearchContext<Code>& ctx, const float* St, const float* bmax, int64_t nblocks,
                      int threads, Workspace& ws) {
  const Compressed<Code>& col = ctx.col;
  const int64_t qlen = ctx.qlen, nlist = col.nlist, qp = padded_qlen(qlen);
  const int64_t np = std::min(ctx.p.nprobe, nlist);
  ws.probed.clear();
  if (np == nlist) {  // every cell, listed once
    for (int64_t c = 0; c < nlist; ++c) ws.probed.push_back(c);
  } else {
    // Columns in chunks, each into its own list; the lists joined in column order (the same list as one
    // pass over the columns). Each column reads its blocks' maxima and the cells of its best blocks.
    const int probe_threads = threads_for(qlen * (nblocks + np * kCellBlock), kMinProbeReads, threads);
    const int64_t grain = (qlen + probe_threads - 1) / probe_threads, nchunks = (qlen + grain - 1) / grain;
    ws.probe_parts.resize(static_cast<size_t>(nchunks));
    ws.probe_keys.resize(static_cast<size_t>(nchunks));
    parallel_chunks(qlen, grain, probe_threads, [&](int64_t a0, int64_t a1) {
      std::vector<int64_t>& part = ws.probe_parts[static_cast<size_t>(a0 / grain)];
      part.clear();
      for (int64_t a = a0; a < a1; ++a)
        probe_column(St, qp, a, bmax, nblocks, ctx.empty, nlist, np, ws.probe_keys[static_cast<size_t>(a0 / grain)],
                     part);
    });
    for (const std::vector<int64_t>& part : ws.probe_parts) ws.probed.insert(ws.probed.end(), part.begin(), part.end());
  }

  // 2. candidates: distinct documents of the probed cells' lists (but those longer than max_list), allowed ones,
  // ascending
  ws.docs.clear();
  for (const int64_t c : ws.probed) {
    if (ws.cell_seen[c]) continue;
    ws.cell_seen[c] = 1;
    const int64_t lo = ctx.ivf.ivf_offsets[c], hi = ctx.ivf.ivf_offsets[c + 1];
    if (ctx.p.max_list > 0 && hi - lo > ctx.p.max_list) continue;  // a hub: its documents are no candidates
    for (int64_t e = lo; e < hi; ++e) {
      const int64_t doc = ctx.ivf.ivf[e];
      if (doc < 0 || doc >= col.ndocs)  // the workspace dies with the exception
        throw std::invalid_argument("ivf: entry " + std::to_string(e) + " is document " +
                                    std::to_string(doc) + ", outside [0, ndocs)");
      if (!ws.doc_seen[doc]) {
        ws.doc_seen[doc] = 1;
        ws.docs.push_back(doc);
      }
    }
  }
  for (const int64_t c : ws.probed) ws.cell_seen[c] = 0;
  ascending_candidates(ws, col.ndocs, ctx.allowed);
}

template <class Code>
void search_query(const SearchContext<Code>& ctx, int64_t q, Workspace& ws, int threads) {
  const Compressed<Code>& col = ctx.col;
  const int64_t qlen = ctx.qlen, nlist = col.nlist, qp = padded_qlen(qlen);
  const float* Qt = ctx.Qt + q * col.d * qp;
  const CellCodes& cc = ctx.cells;
  const bool quantized = cc.cq != nullptr;  // (set only when the search scores the centroids itself)
  if (quantized || ctx.kept.int8.q != nullptr || ctx.p.exact_int8)
    prepare_quantized_query(ctx.Q + q * qlen * col.d, qlen, col.d, ctx.vnni, ws.qz, ctx.amx);

  // 1. transposed scores, kept cells, probed cells
  const int64_t nblocks = (nlist + kCellBlock - 1) / kCellBlock;
  float* St = ws.St.get();
  float* bmax = ws.bmax.get();
  const int64_t cell_dots = qlen * nlist * col.d;
  const int cell_threads = ctx.centroids != nullptr ? threads_for(cell_dots, kMinCellDots, threads)
                                                    : threads_for(qlen * nlist, kMinCellScores, threads);
  parallel_chunks(nblocks, std::max<int64_t>(1, grain_for(nblocks, cell_threads, 2)), cell_threads,
                  [&](int64_t b0, int64_t b1) {
                    const int64_t c0 = b0 * kCellBlock, c1 = std::min(nlist, b1 * kCellBlock);
                    if (quantized) {
                      score_cells_quantized(cc, ws, qp, col.d, c0, c1, St);
                      if (cc.vnni) return;  // keep and bmax computed with the scores
                    } else if (ctx.centroids != nullptr) {
                      score_cells(Qt, qp, ctx.centroids, col.d, c0, c1, St);
                    } else {
                      transpose_cells(ctx.S + q * qlen * nlist, qlen, nlist, c0, c1, St);
                    }
                    summarise_cells(St, qlen, ctx.empty, c0, c1, ctx.p.threshold, ws.keep.data(), bmax);
                  });
  if (ctx.given.docs != nullptr) {  // the caller's candidates (search.h): no probe
    ws.cand.clear();
    for (int64_t i = 0; i < ctx.given.n; ++i) {
      const int64_t doc = ctx.given.docs[i];
      if (ctx.allowed == nullptr || ctx.allowed[doc]) ws.cand.push_back(doc);
    }
  } else {
    probe_candidates(ctx, St, bmax, nblocks, threads, ws);
  }
  const int64_t ncand = static_cast<int64_t>(ws.cand.size());

  // 3. pruned centroid scores, keep the best ndocs; 4. full centroid scores of those, keep the best
  // n_exact. Without pruning (threshold -inf: every cell kept, the default) or when every candidate survives
  // step 3, only the full scores are computed: the best n_exact of them are those steps 3 and 4 keep. When most
  // candidates survive, one pass computes both scores of every candidate (each token's row read once);
  // otherwise the full scores are computed only for the survivors that had a token pruned (the others' pruned
  // score is their full score).
  const CellLists<Code> lists = cell_lists(col, ctx.ivf);
  ws.items.resize(static_cast<size_t>(ncand));
  if (!prunes(ctx.p.threshold) || ncand <= ctx.p.ndocs) {  // the full scores alone rank the candidates
    ws.scores.resize(static_cast<size_t>(ncand));
    centroid_scores_parallel(St, qlen, col, lists, ws.cand.data(), ncand, nullptr, ws.scores.data(), nullptr,
                             threads);
    for (int64_t i = 0; i < ncand; ++i) ws.items[i] = Scored{ws.scores[i], i};
  } else if (ncand <= 2 * ctx.p.ndocs) {
    ws.pruned.resize(static_cast<size_t>(ncand));
    ws.scores.resize(static_cast<size_t>(ncand));
    centroid_scores_both_parallel(St, qlen, col, lists, ws.cand.data(), ncand, ws.keep.data(), ws.pruned.data(),
                                  ws.scores.data(), threads);
    for (int64_t i = 0; i < ncand; ++i) ws.items[i] = Scored{ws.pruned[i], i};
    select_ascending(ws.items, ctx.p.ndocs);
    for (Scored& it : ws.items) it.score = ws.scores[it.doc];
  } else {
    ws.pruned.resize(static_cast<size_t>(ncand));
    ws.skipped.resize(static_cast<size_t>(ncand));
    centroid_scores_parallel(St, qlen, col, lists, ws.cand.data(), ncand, ws.keep.data(), ws.pruned.data(),
                             ws.skipped.data(), threads);
    for (int64_t i = 0; i < ncand; ++i) ws.items[i] = Scored{ws.pruned[i], i};
    select_ascending(ws.items, ctx.p.ndocs);
    ws.redo.clear();
    for (const Scored& it : ws.items)
      if (ws.skipped[it.doc]) ws.redo.push_back(ws.cand[it.doc]);
    ws.redo_scores.resize(ws.redo.size());
    centroid_scores_parallel(St, qlen, col, lists, ws.redo.data(), static_cast<int64_t>(ws.redo.size()), nullptr,
                             ws.redo_scores.data(), nullptr, threads);
    for (size_t i = 0, r = 0; i < ws.items.size(); ++i)
      if (ws.skipped[ws.items[i].doc]) ws.items[i].score = ws.redo_scores[r++];
  }
  select_ascending(ws.items, ctx.p.n_exact);

  // 5. exact MaxSim on the decompressed tokens (or the quantised one over the kept vectors), top k
  const int64_t m = static_cast<int64_t>(ws.items.size());
  ws.docs.resize(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) ws.docs[i] = ws.cand[ws.items[i].doc];
  ws.scores.resize(static_cast<size_t>(m));
  page_in_step5(ctx, ws.docs.data(), m);
  if (ctx.token_scales != nullptr) {
    if (ctx.scales_done != nullptr)  // the caller's writable scales (search.h: token_scales_done)
      fill_token_scales(col, const_cast<uint16_t*>(ctx.token_scales), ctx.scales_done, ws.docs.data(), m, threads);
    build_adc_table(col, ctx.Q + q * qlen * col.d, qlen, ctx.adc_peak, ws, threads);
    adc_scores_parallel(col, qlen, ws, St, ctx.token_scales, ws.docs.data(), m, ws.scores.data(), threads);
  } else if (ctx.kept.int8.q != nullptr || ctx.kept.half != nullptr)
    kept_scores_parallel(KeptScorer{col.doc_offsets, ctx.kept, col.d, qlen, ctx.vnni, ctx.amx, &ws.qz, Qt},
                         ws.docs.data(), m, ws.scores.data(), threads);
  else if (ctx.p.exact_int8)
    exact_q_scores_parallel(col, qlen, ctx.vnni, ws.qz, ws.docs.data(), m, ws.scores.data(), threads);
  else
    exact_scores_parallel(Qt, qlen, col, ws.docs.data(), m, ws.scores.data(), threads);
  for (int64_t i = 0; i < m; ++i) ws.items[i] = Scored{ws.scores[i], ws.docs[i]};
  write_top(ws.items, ctx.p.k, ctx.out_scores + q * ctx.p.k, ctx.out_docs + q * ctx.p.k);
}

// int8 sums are exact float sums only up to kMaxQuantizedDim dimensions (quantize.h).
void check_quantized_dim(bool given, int64_t d, const std::string& what) {
  if (given && d > kMaxQuantizedDim)
    throw std::invalid_argument(what + " need d <= " + std::to_string(kMaxQuantizedDim));
}

template <class Code>
void check_common(const Compressed<Code>& col, int64_t qlen, int64_t k) {
  if (col.d <= 0 || col.d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (qlen < 1) throw std::invalid_argument("queries need at least one token");
  if (k < 1) throw std::invalid_argument("k must be >= 1");
  if (col.nlist < 1) throw std::invalid_argument("nlist must be >= 1");
  check_offsets(col.doc_offsets, col.ndocs, col.n, "doc_offsets");
}

}  // namespace

template <class Code>
void search(const float* Q, const float* S, int64_t nq, int64_t qlen, const Compressed<Code>& col,
            const IvfView<Code>& ivf, const uint8_t* allowed, const SearchParams& params, float* out_scores,
            int64_t* out_docs, int num_threads, const Int8Rows& cell_codes, const KeptRows& kept,
            const uint16_t* token_scales, uint8_t* token_scales_done, const Candidates& candidates) {
  check_common(col, qlen, params.k);
  if (candidates.docs != nullptr)
    for (int64_t i = 0; i < candidates.n; ++i) {
      const int64_t doc = candidates.docs[i];
      if (doc < 0 || doc >= col.ndocs || (i > 0 && doc <= candidates.docs[i - 1]))
        throw std::invalid_argument("search: candidates must be distinct documents in [0, ndocs), ascending; "
                                    "candidates[" + std::to_string(i) + "] = " + std::to_string(doc));
    }
  if (token_scales_done != nullptr && token_scales == nullptr)
    throw std::invalid_argument("search: token_scales_done flags the documents whose token_scales are derived; "
                                "give token_scales with it");
  if (params.nprobe < 1 || params.ndocs < 1 || params.n_exact < 1)
    throw std::invalid_argument("nprobe, ndocs and n_exact must be >= 1");
  check_offsets(ivf.ivf_offsets, col.nlist, ivf.npairs, "ivf_offsets");
  const int threads = resolve_threads(num_threads);
  const int64_t qp = padded_qlen(qlen);
  std::vector<float> Qt(static_cast<size_t>(nq * col.d * qp));
  transpose_queries(Q, nq, qlen, col.d, Qt.data());
  std::vector<uint8_t> empty(static_cast<size_t>(col.nlist));
  for (int64_t c = 0; c < col.nlist; ++c) empty[c] = ivf.ivf_offsets[c + 1] == ivf.ivf_offsets[c] ? 1 : 0;
  check_quantized_dim(cell_codes.q != nullptr, col.d, "search: quantised cell scores (cell_codes)");
  check_quantized_dim(kept.int8.q != nullptr, col.d, "search: kept int8 vectors");
  check_quantized_dim(params.exact_int8, col.d, "search: int8 exact scores (exact_int8)");
  if (params.exact_int8 && (kept.int8.q != nullptr || kept.half != nullptr))
    throw std::invalid_argument("search: exact_int8 scores the decompressed candidates; with kept vectors they are "
                                "scored by those instead: pass one or the other");
  if (token_scales != nullptr && (params.exact_int8 || kept.int8.q != nullptr || kept.half != nullptr))
    throw std::invalid_argument("search: token_scales make step 5 score the candidates by lookup tables; exact_int8 "
                                "and kept vectors are other ways of scoring them: pass one of the three");
  if (token_scales != nullptr && col.table == nullptr)
    throw std::invalid_argument("search: the lookup-table exact stage (token_scales) needs the decode table");
  std::vector<float> adc_peak(token_scales != nullptr ? static_cast<size_t>(col.d) : 0);
  if (token_scales != nullptr) adc_table_peaks(col.table, col.d, col.nbits, adc_peak.data());
  const bool vnni = have_vnni() && (qp + 15) / 16 * 16 <= kMaxQp16;
  const bool amx = vnni && col.d % 64 == 0 && have_amx();
  CellCodes cells;
  if (S == nullptr && cell_codes.q != nullptr) {  // (each query's values are checked as it is quantised)
    cells.cq = cell_codes.q;
    cells.cscale = cell_codes.scale;
    if (vnni) {
      // x >= t for floats x exactly when (double)x >= threshold: t is the threshold rounded up to a float.
      float t = static_cast<float>(params.threshold);
      if (static_cast<double>(t) < params.threshold) t = std::nextafter(t, std::numeric_limits<float>::infinity());
      cells.rsum = cell_codes.sums;
      cells.empty = empty.data();
      cells.threshold = t;
      cells.qlen = qlen;
      cells.vnni = true;
      cells.amx = amx;
      cells.stream = !amx && col.nlist * qp * static_cast<int64_t>(sizeof(float)) >= kStreamBytes;
    }
  }
  const SearchContext<Code> ctx{Q,     token_scales, token_scales_done, adc_peak.data(), Qt.data(), cells, kept, vnni, amx, S,
                                S == nullptr ? col.centroids : nullptr, qlen, col, ivf, empty.data(), allowed, params,
                                out_scores, out_docs, candidates};
  if (nq >= threads && threads > 1) {
    parallel_chunks(nq, (nq + threads - 1) / threads, threads, [&](int64_t b, int64_t e) {
      WorkspaceLease ws(col.nlist, qp, col.ndocs);
      for (int64_t q = b; q < e; ++q) search_query(ctx, q, ws.get(), 1);
      ws.release();
    });
  } else {
    WorkspaceLease ws(col.nlist, qp, col.ndocs);
    for (int64_t q = 0; q < nq; ++q) search_query(ctx, q, ws.get(), threads);
    ws.release();
  }
}

bool vnni_kernels() { return have_vnni(); }
bool amx_kernels() { return have_amx(); }

void kept_scores(const float* Q, int64_t nq, int64_t qlen, int64_t d, const int64_t* doc_offsets, int64_t ndocs,
                 int64_t n, const KeptRows& kept, const int64_t* docs, int64_t m, float* out, int num_threads) {
  if (d <= 0 || d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (qlen < 1) throw std::invalid_argument("queries need at least one token");
  if ((kept.int8.q == nullptr) == (kept.half == nullptr))
    throw std::invalid_argument("kept_scores: give int8 or float16 kept vectors");
  check_quantized_dim(kept.int8.q != nullptr, d, "kept_scores: kept int8 vectors");
  check_offsets(doc_offsets, ndocs, n, "doc_offsets");
  for (int64_t i = 0; i < m; ++i)
    if (docs[i] < 0 || docs[i] >= ndocs)
      throw std::invalid_argument("kept_scores: docs[" + std::to_string(i) + "] = " + std::to_string(docs[i]) +
                                  " is outside [0, ndocs)");
  const int threads = resolve_threads(num_threads);
  const int64_t qp = padded_qlen(qlen);
  const bool vnni = have_vnni() && (qp + 15) / 16 * 16 <= kMaxQp16;
  const bool amx = vnni && d % 64 == 0 && have_amx();
  std::vector<float> Qt(kept.half != nullptr ? static_cast<size_t>(nq * d * qp) : 0);
  if (kept.half != nullptr) transpose_queries(Q, nq, qlen, d, Qt.data());
  TokenRows rows[2];
  page_in_rows(rows, kept_token_rows(kept, d, rows), doc_offsets, docs, m);
  QuantQuery qz;
  for (int64_t q = 0; q < nq; ++q) {
    if (kept.int8.q != nullptr) prepare_quantized_query(Q + q * qlen * d, qlen, d, vnni, qz, amx);
    const float* Qt_q = kept.half != nullptr ? Qt.data() + q * d * qp : nullptr;
    const KeptScorer ks{doc_offsets, kept, d, qlen, vnni, amx, &qz, Qt_q};
    kept_scores_parallel(ks, docs, m, out + q * m, threads);
  }
}

template <class Code>
void exact_search(const float* Q, int64_t nq, int64_t qlen, const Compressed<Code>& col, const uint8_t* allowed,
                  int64_t k, float* out_scores, int64_t* out_docs, int num_threads) {
  check_common(col, qlen, k);
  const int threads = resolve_threads(num_threads);
  const int64_t qp = padded_qlen(qlen);
  std::vector<float> Qt(static_cast<size_t>(nq * col.d * qp));
  transpose_queries(Q, nq, qlen, col.d, Qt.data());
  // Each chunk of documents keeps its own top k; the top k of a strict total order is unique, so the
  // merged result does not depend on the chunking. Memory: O(chunks * k), not O(ndocs).
  auto one_query = [&](int64_t q, int inner) {
    const int64_t grain = std::max<int64_t>(64, grain_for(col.ndocs, inner, 8));
    const int64_t nchunks = (col.ndocs + grain - 1) / grain;
    std::vector<std::vector<Scored>> tops(static_cast<size_t>(nchunks));
    parallel_chunks(col.ndocs, grain, inner, [&](int64_t b, int64_t e) {
      std::vector<int64_t> docs;
      for (int64_t i = b; i < e; ++i)
        if (allowed == nullptr || allowed[i]) docs.push_back(i);
      const int64_t m = static_cast<int64_t>(docs.size());
      std::vector<float> scores(static_cast<size_t>(m));
      exact_scores(Qt.data() + q * col.d * qp, qlen, col, docs.data(), m, scores.data());
      std::vector<Scored>& top = tops[static_cast<size_t>(b / grain)];
      top.resize(static_cast<size_t>(m));
      for (int64_t i = 0; i < m; ++i) top[i] = Scored{scores[i], docs[i]};
      keep_top(top, k);
    });
    std::vector<Scored> merged;
    for (const std::vector<Scored>& top : tops) merged.insert(merged.end(), top.begin(), top.end());
    write_top(merged, k, out_scores + q * k, out_docs + q * k);
  };
  if (nq >= threads && threads > 1) {
    parallel_chunks(nq, (nq + threads - 1) / threads, threads, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) one_query(q, 1);
    });
  } else {
    for (int64_t q = 0; q < nq; ++q) one_query(q, threads);
  }
}

#define PLAIDX_SEARCH_INSTANTIATE(Code)                                                                       \
  template void search<Code>(const float*, const float*, int64_t, int64_t, const Compressed<Code>&,               \
                             const IvfView<Code>&, const uint8_t*, const SearchParams&, float*, int64_t*, int,   \
                             const Int8Rows&, const KeptRows&, const uint16_t*, uint8_t*, const Candidates&); \
  template void exact_search<Code>(const float*, int64_t, int64_t, const Compressed<Code>&, const uint8_t*,       \
                                   int64_t, float*, int64_t*, int);
PLAIDX_SEARCH_INSTANTIATE(uint16_t)
PLAIDX_SEARCH_INSTANTIATE(uint32_t)
#undef PLAIDX_SEARCH_INSTANTIATE

}  // namespace plaidx::cpu
