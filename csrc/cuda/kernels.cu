// kernels.cu: the CUDA twins of the CPU kernels (see api.h for the contract, plaidx/_kernels.py for the
// semantics they share with the CPU).
//
// PLAID search runs on the GPU stage by stage for a chunk of queries at a time:
//   1. scores_kernel     S = Q C^T in two layouts (S (q, a, c) for probing, St (q, c, a) for the
//                        centroid interaction) and keep[q, c] = max_a S >= threshold
//   2. probe_kernel      one warp per query token: the nprobe best cells (score desc, cell asc)
//   3. mark_kernel       flags[q, doc] = 1 for the documents of the probed cells' lists (allowed only)
//   4. count / compact   per-query candidate counts, then the candidates in ascending document order
//   5. interaction       one warp per candidate, lanes over query tokens: pruned centroid MaxSim
//   6. segmented sorts   on 64-bit keys (score desc, then index/document asc): the ranking order of the
//                        CPU kernels, exact and independent of the sort's stability
//   7. exact_kernel      one block per (query, document): decode, normalise, MaxSim
// Buffers are per call, so a Collection can serve several host threads at once.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cub/cub.cuh>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/ivf.h"
#include "cpu/quantize.h"
#include "cuda/api.h"

#ifndef PLAIDX_CUDA_ARCHS
#define PLAIDX_CUDA_ARCHS "unknown"
#endif

namespace plaidx::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kCellsPerBlock = 128;  // scores_kernel: one thread per cell
constexpr int kDTile = 32;           // scores_kernel: dimensions per shared-memory tile
constexpr int kExactWarps = 4;       // exact_kernel: warps per (query, document)
constexpr int kMaxProbe = 512;       // probe_kernel: largest nprobe below nlist
constexpr float kInf = std::numeric_limits<float>::infinity();

#define PX_CUDA(call) check_cuda((call), #call, __LINE__)

void check_cuda(cudaError_t e, const char* what, int line) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(e) + " (" + what +
                             ", kernels.cu:" + std::to_string(line) + ")");
}

void check_launch(int line) { check_cuda(cudaGetLastError(), "kernel launch", line); }
#define PX_LAUNCHED() check_launch(__LINE__)

// Device memory owned by one host object; grows, never shrinks.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  ~Buffer() {
    if (p_ != nullptr) cudaFree(p_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void resize(size_t n) {
    if (n > cap_) {
      if (p_ != nullptr) cudaFree(p_);
      p_ = nullptr;
      cap_ = 0;
      PX_CUDA(cudaMalloc(reinterpret_cast<void**>(&p_), std::max<size_t>(n, 1) * sizeof(T)));
      cap_ = n;
    }
    n_ = n;
  }
  void upload(const T* host, size_t n) {
    resize(n);
    if (n > 0) PX_CUDA(cudaMemcpy(p_, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void download(T* host, size_t n) const {
    if (n > 0) PX_CUDA(cudaMemcpy(host, p_, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  void zero() {
    if (n_ > 0) PX_CUDA(cudaMemset(p_, 0, n_ * sizeof(T)));
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return cap_ * sizeof(T); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// Makes `device` current for the scope (the current device is per host thread).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    PX_CUDA(cudaGetDevice(&prev_));
    if (prev_ != device) PX_CUDA(cudaSetDevice(device));
    changed_ = prev_ != device;
  }
  ~DeviceScope() {
    if (changed_) cudaSetDevice(prev_);
  }

 private:
  int prev_ = 0;
  bool changed_ = false;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------- ranking
// The order of topk.h: score descending (NaN as -inf, -0 as +0), then index ascending. A 64-bit key
// whose ascending order is that order: high 32 bits the score's bits flipped into descending order,
// low 32 bits the index.
__device__ __forceinline__ float rank_score(float s) { return isnan(s) ? -kInf : s + 0.0f; }

__device__ __forceinline__ uint64_t rank_key(float s, uint32_t idx) {
  uint32_t u = __float_as_uint(rank_score(s));
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending with the float
  return (static_cast<uint64_t>(~u) << 32) | idx;
}

__device__ __forceinline__ float key_score(uint64_t key) {
  uint32_t u = ~static_cast<uint32_t>(key >> 32);
  u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
  return __uint_as_float(u);
}

__device__ __forceinline__ uint32_t key_index(uint64_t key) { return static_cast<uint32_t>(key); }

// Segment of item i: the q with seg[q] <= i < seg[q + 1] (seg ascending, nseg + 1 entries).
__device__ __forceinline__ int find_segment(const int64_t* seg, int nseg, int64_t i) {
  int lo = 0, hi = nseg - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seg[mid] <= i) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int off = kWarp / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// --------------------------------------------------------------------------- 1. centroid scores
// Grid (ceil(nlist / 128), nq), 128 threads, one cell per thread, query tokens 32 at a time in registers.
// S (nq, qlen, nlist), St (nq, nlist, qlen) and keep (nq, nlist) are each optional.
// With cscale and qscale (quantised scores: Q and ct hold int8 values, so every sum is an exact integer),
// each score is then (sum * cscale[c]) * qscale[q, a], as cpu/quantize.h.
__global__ void scores_kernel(const float* __restrict__ Q, int64_t qlen, int64_t d,
                              const float* __restrict__ ct, int64_t nlist, double threshold, float* S,
                              float* St, uint8_t* keep, const float* __restrict__ cscale = nullptr,
                              const float* __restrict__ qscale = nullptr) {
  __shared__ float Qs[kWarp][kDTile];
  __shared__ float T[kWarp][kCellsPerBlock + 1];
  const int64_t q = blockIdx.y;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kCellsPerBlock;
  const int64_t c = c0 + threadIdx.x;
  const bool valid = c < nlist;
  const float* Qq = Q + q * qlen * d;
  float cmax = -kInf;
  for (int64_t a0 = 0; a0 < qlen; a0 += kWarp) {
    const int na = static_cast<int>(min(static_cast<int64_t>(kWarp), qlen - a0));
    float acc[kWarp];
#pragma unroll
    for (int a = 0; a < kWarp; ++a) acc[a] = 0.0f;
    for (int64_t j0 = 0; j0 < d; j0 += kDTile) {
      const int nj = static_cast<int>(min(static_cast<int64_t>(kDTile), d - j0));
      for (int e = threadIdx.x; e < kWarp * kDTile; e += kCellsPerBlock) {
        const int a = e / kDTile, j = e % kDTile;
        Qs[a][j] = (a < na && j < nj) ? Qq[(a0 + a) * d + j0 + j] : 0.0f;
      }
      __syncthreads();
      if (valid) {
        for (int j = 0; j < nj; ++j) {
          const float x = ct[(j0 + j) * nlist + c];
#pragma unroll
          for (int a = 0; a < kWarp; ++a) acc[a] = fmaf(Qs[a][j], x, acc[a]);
        }
      }
      __syncthreads();
    }
    if (valid && cscale != nullptr) {
      const float cs = cscale[c];
#pragma unroll
      for (int a = 0; a < kWarp; ++a)
        if (a < na) acc[a] = __fmul_rn(__fmul_rn(acc[a], cs), qscale[q * qlen + a0 + a]);
    }
    if (valid) {
      for (int a = 0; a < na; ++a) {
        if (S != nullptr) S[(q * qlen + a0 + a) * nlist + c] = acc[a];
        cmax = acc[a] > cmax ? acc[a] : cmax;
      }
    }
    if (St != nullptr) {  // transpose through shared memory so that the writes are coalesced
#pragma unroll
      for (int a = 0; a < kWarp; ++a) T[a][threadIdx.x] = acc[a];
      __syncthreads();
      for (int e = threadIdx.x; e < kCellsPerBlock * na; e += kCellsPerBlock) {
        const int i = e / na, a = e % na;
        if (c0 + i < nlist) St[(q * nlist + c0 + i) * qlen + a0 + a] = T[a][i];
      }
      __syncthreads();
    }
  }
  if (keep != nullptr && valid) keep[q * nlist + c] = static_cast<double>(cmax) >= threshold ? 1 : 0;
}

// ------------------------------------------------------------------------------------- 2. probe
__device__ __forceinline__ bool ranks_before(float xa, int ca, float xb, int cb) {
  return xa > xb || (xa == xb && ca < cb);
}

// One warp per row of S (rows = nq * qlen): the np < nlist best cells into out (rows, np), best first;
// cells with empty[c] (no document in their list) rank as -inf. Each lane keeps the np best of its cells
// (sorted insertion), then np rounds of a warp arg-best merge.
template <int NP>
__global__ void probe_kernel(const float* __restrict__ S, const uint8_t* __restrict__ empty, int64_t rows,
                             int64_t nlist, int np, int32_t* __restrict__ out) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;  // rows are whole warps
  float bs[NP];
  int bc[NP];
  int m = 0;
  const float* Sr = S + row * nlist;
  for (int64_t c = lane; c < nlist; c += kWarp) {
    const float x = empty[c] ? -kInf : rank_score(Sr[c]);
    if (m == np && !(x > bs[np - 1])) continue;  // this lane's cells arrive in ascending order
    int i = m < np ? m++ : np - 1;
    while (i > 0 && ranks_before(x, static_cast<int>(c), bs[i - 1], bc[i - 1])) {
      bs[i] = bs[i - 1];
      bc[i] = bc[i - 1];
      --i;
    }
    bs[i] = x;
    bc[i] = static_cast<int>(c);
  }
  int head = 0;
  for (int r = 0; r < np; ++r) {
    const float hx = head < m ? bs[head] : -kInf;
    const int hc = head < m ? bc[head] : INT_MAX;
    float bx = hx;
    int bcell = hc;
    for (int off = kWarp / 2; off > 0; off /= 2) {
      const float ox = __shfl_xor_sync(0xffffffffu, bx, off);
      const int oc = __shfl_xor_sync(0xffffffffu, bcell, off);
      if (ranks_before(ox, oc, bx, bcell)) {
        bx = ox;
        bcell = oc;
      }
    }
    if (head < m && bcell == hc) ++head;
    if (lane == 0) out[row * np + r] = bcell;
  }
}

// probed (nq, P) = 0..nlist-1 for every query (every cell probed).
__global__ void iota_kernel(int32_t* probed, int64_t total, int64_t P) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) probed[i] = static_cast<int32_t>(i % P);
}

// ---------------------------------------------------------------------------------- 3. candidates
// Grid (P, nq): flags[q, doc] = 1 for each allowed document in the list of cell probed[q, p], unless that list
// holds more than max_list documents (max_list > 0: a hub, see cpu::SearchParams).
__global__ void mark_kernel(const int32_t* __restrict__ probed, int64_t P, const int32_t* __restrict__ ivf,
                            const int64_t* __restrict__ ivf_offsets, const uint8_t* __restrict__ allowed,
                            int64_t ndocs, int64_t max_list, uint8_t* __restrict__ flags) {
  const int64_t q = blockIdx.y;
  const int32_t c = probed[q * P + blockIdx.x];
  const int64_t lo = ivf_offsets[c], hi = ivf_offsets[c + 1];
  if (max_list > 0 && hi - lo > max_list) return;
  uint8_t* f = flags + q * ndocs;
  for (int64_t e = lo + threadIdx.x; e < hi; e += blockDim.x) {
    const int32_t doc = ivf[e];
    if (allowed == nullptr || allowed[doc]) f[doc] = 1;
  }
}

constexpr int kScanThreads = 256;
constexpr int kScanItems = 8;

// One block per query: the number of flagged documents.
__global__ void count_kernel(const uint8_t* __restrict__ flags, int64_t ndocs, int64_t* __restrict__ counts) {
  using Reduce = cub::BlockReduce<int64_t, kScanThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const uint8_t* f = flags + static_cast<int64_t>(blockIdx.x) * ndocs;
  int64_t n = 0;
  for (int64_t i = threadIdx.x; i < ndocs; i += kScanThreads) n += f[i];
  const int64_t total = Reduce(tmp).Sum(n);
  if (threadIdx.x == 0) counts[blockIdx.x] = total;
}

// One block per query: the flagged documents in ascending order into out[seg[q] : seg[q + 1]].
__global__ void compact_kernel(const uint8_t* __restrict__ flags, int64_t ndocs, const int64_t* __restrict__ seg,
                               int32_t* __restrict__ out) {
  using Scan = cub::BlockScan<int, kScanThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int64_t q = blockIdx.x;
  const uint8_t* f = flags + q * ndocs;
  int32_t* o = out + seg[q];
  int64_t base = 0;
  constexpr int64_t kTile = static_cast<int64_t>(kScanThreads) * kScanItems;
  for (int64_t t0 = 0; t0 < ndocs; t0 += kTile) {
    int items[kScanItems];
    const int64_t first = t0 + static_cast<int64_t>(threadIdx.x) * kScanItems;  // blocked arrangement
#pragma unroll
    for (int u = 0; u < kScanItems; ++u) items[u] = (first + u < ndocs) ? f[first + u] : 0;
    int prefix[kScanItems];
    int aggregate = 0;
    Scan(tmp).ExclusiveSum(items, prefix, aggregate);
#pragma unroll
    for (int u = 0; u < kScanItems; ++u)
      if (items[u]) o[base + prefix[u]] = static_cast<int32_t>(first + u);
    base += aggregate;
    __syncthreads();  // tmp is reused by the next tile
  }
}

// ------------------------------------------------------------------------ 5. centroid interaction
// One warp per item i of docs (nseg segments by query): lanes over query tokens, 32 at a time.
// out[i] = sum_a max over the document's cells t (with keep[q, codes[t]] when keep is given) of
// St[q, codes[t], a]; 0 when no cell is used. skipped[i] (optional): some cell was left out. Called
// with the distinct cells (doc_offsets = cell_offsets, codes = cells), which give the maxima the
// tokens' codes give.
// only (optional): items with only[i] == 0 are left untouched.
__global__ void interaction_kernel(const int32_t* __restrict__ docs, const int64_t* __restrict__ seg, int nseg,
                                   int64_t total, const int64_t* __restrict__ doc_offsets,
                                   const uint16_t* __restrict__ codes, const float* __restrict__ St,
                                   int64_t nlist, int64_t qlen, const uint8_t* __restrict__ keep,
                                   const uint8_t* __restrict__ only, float* __restrict__ out,
                                   uint8_t* __restrict__ skipped) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= total) return;
  if (only != nullptr && !only[i]) return;
  const int q = find_segment(seg, nseg, i);
  const int64_t doc = docs[i];
  const int64_t lo = doc_offsets[doc], hi = doc_offsets[doc + 1];
  const float* Sq = St + static_cast<int64_t>(q) * nlist * qlen;
  const uint8_t* kq = keep != nullptr ? keep + static_cast<int64_t>(q) * nlist : nullptr;
  float score = 0.0f;
  bool any_used = false, any_skipped = false;
  for (int64_t a0 = 0; a0 < qlen; a0 += kWarp) {
    const int64_t a = a0 + lane;
    float m = -kInf;
    for (int64_t t0 = lo; t0 < hi; t0 += kWarp) {
      const int64_t t = t0 + lane;
      const int code = t < hi ? codes[t] : 0;
      const bool use = t < hi && (kq == nullptr || kq[code]);
      uint32_t mask = __ballot_sync(0xffffffffu, use);
      if (a0 == 0) {
        const int n_here = static_cast<int>(min(static_cast<int64_t>(kWarp), hi - t0));
        any_used |= mask != 0;
        any_skipped |= __popc(mask) < n_here;
      }
      while (mask != 0) {
        const int src = __ffs(mask) - 1;
        mask &= mask - 1;
        const int c = __shfl_sync(0xffffffffu, code, src);
        if (a < qlen) {
          const float v = Sq[static_cast<int64_t>(c) * qlen + a];
          m = v > m ? v : m;
        }
      }
    }
    score += warp_sum(a < qlen ? m : 0.0f);
  }
  if (lane == 0) {
    out[i] = any_used ? score : 0.0f;
    if (skipped != nullptr) skipped[i] = any_skipped ? 1 : 0;
  }
}

// ------------------------------------------------------------------------------ 6. ranking keys
// keys[i] = rank_key(scores[i], i - seg[q]) (index within the query's segment).
__global__ void keys_by_index_kernel(const float* __restrict__ scores, const int64_t* __restrict__ seg, int nseg,
                                     int64_t total, uint64_t* __restrict__ keys) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int q = find_segment(seg, nseg, i);
  keys[i] = rank_key(scores[i], static_cast<uint32_t>(i - seg[q]));
}

// keys[i] = rank_key(scores[i], document of item i): docs[i], or docs[i - seg[q]] when docs_shared (every
// segment lists the same documents).
__global__ void keys_by_doc_kernel(const float* __restrict__ scores, const int32_t* __restrict__ docs,
                                   bool docs_shared, const int64_t* __restrict__ seg, int nseg, int64_t total,
                                   uint64_t* __restrict__ keys) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t src = docs_shared ? i - seg[find_segment(seg, nseg, i)] : i;
  keys[i] = rank_key(scores[i], static_cast<uint32_t>(docs[src]));
}

// For each query q and r < take[q + 1] - take[q]: the r-th ranked item of segment q (sorted index keys),
// gathered into [take[q] + r]: its document, score and skipped flag.
__global__ void gather_top_kernel(const uint64_t* __restrict__ sorted, const int64_t* __restrict__ seg,
                                  const int64_t* __restrict__ take, int nseg, int64_t total_take,
                                  const int32_t* __restrict__ docs, const float* __restrict__ scores,
                                  const uint8_t* __restrict__ skipped, int32_t* __restrict__ out_docs,
                                  float* __restrict__ out_scores, uint8_t* __restrict__ out_skipped) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= total_take) return;
  const int q = find_segment(take, nseg, j);
  const int64_t src = seg[q] + key_index(sorted[seg[q] + (j - take[q])]);
  out_docs[j] = docs[src];
  out_scores[j] = scores[src];
  out_skipped[j] = skipped[src];
}

// The first take[q + 1] - take[q] documents of each sorted (document-keyed) segment.
__global__ void gather_docs_kernel(const uint64_t* __restrict__ sorted, const int64_t* __restrict__ seg,
                                   const int64_t* __restrict__ take, int nseg, int64_t total_take,
                                   int32_t* __restrict__ out_docs) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= total_take) return;
  const int q = find_segment(take, nseg, j);
  out_docs[j] = static_cast<int32_t>(key_index(sorted[seg[q] + (j - take[q])]));
}

// out (nseg, k): the best k of each sorted (document-keyed) segment, padded with -inf / -1.
__global__ void write_top_kernel(const uint64_t* __restrict__ sorted, const int64_t* __restrict__ seg, int nseg,
                                 int64_t k, float* __restrict__ out_scores, int64_t* __restrict__ out_docs) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= nseg * k) return;
  const int64_t q = j / k, r = j % k;
  if (seg[q] + r < seg[q + 1]) {
    const uint64_t key = sorted[seg[q] + r];
    out_scores[j] = key_score(key);
    out_docs[j] = key_index(key);
  } else {
    out_scores[j] = -kInf;
    out_docs[j] = -1;
  }
}

// ----------------------------------------------------------------------------------- 7. exact MaxSim
struct Tokens {
  // Compressed rows (decode): codes, packed, centroids (nlist, d), weights (d, 2**nbits), nbits.
  const uint16_t* codes = nullptr;
  const uint8_t* packed = nullptr;
  const float* centroids = nullptr;
  const float* weights = nullptr;
  int nbits = 0;
  // The pq codec instead of weights: table (pb, 256, 8 / nbits), levels (16,) or nullptr (cpu/token.h).
  const float* table = nullptr;
  const float* levels = nullptr;
  // Plain rows (no decode, no normalisation): values (n, d).
  const float* values = nullptr;

  static Tokens compressed(const uint16_t* codes, const uint8_t* packed, const float* centroids,
                           const float* weights, int nbits, const float* table = nullptr,
                           const float* levels = nullptr) {
    Tokens tk;
    tk.codes = codes;
    tk.packed = packed;
    tk.centroids = centroids;
    tk.weights = weights;
    tk.nbits = nbits;
    tk.table = table;
    tk.levels = levels;
    return tk;
  }
};

// Writes token t into buf (d,) (one warp, lanes over dimensions) and returns 1 / max(|v|, 1e-12) for a
// decoded token (1 for plain rows).
template <bool DECODE>
__device__ __forceinline__ float load_token(const Tokens& tk, int64_t t, int64_t d, float* buf, int lane) {
  if constexpr (DECODE) {
    const int nbits = tk.nbits, B = 1 << nbits;
    const int64_t pb = d * nbits / 8;
    const float* cent = tk.centroids + static_cast<int64_t>(tk.codes[t]) * d;
    const uint8_t* row = tk.packed + t * pb;
    float ss = 0.0f;
    if (tk.table != nullptr) {  // pq: byte p picks its codeword; the product is exact, so fused or not is the same
      const int dpb = 8 / nbits;
      const float s = tk.levels != nullptr ? tk.levels[row[pb - 1] >> 4] : 1.0f;
      for (int64_t j = lane; j < d; j += kWarp) {
        const int64_t p = j / dpb;
        const float v = cent[j] + s * tk.table[((p << 8) + row[p]) * dpb + (j - p * dpb)];
        buf[j] = v;
        ss = fmaf(v, v, ss);
      }
    } else {
      for (int64_t j = lane; j < d; j += kWarp) {
        const int64_t bit = j * nbits;
        const int code = (row[bit >> 3] >> (bit & 7)) & (B - 1);
        const float v = cent[j] + tk.weights[j * B + code];
        buf[j] = v;
        ss = fmaf(v, v, ss);
      }
    }
    const float norm = sqrtf(warp_sum(ss));
    return 1.0f / (norm < 1e-12f ? 1e-12f : norm);
  } else {
    for (int64_t j = lane; j < d; j += kWarp) buf[j] = tk.values[t * d + j];
    return 1.0f;
  }
}

// One block of kExactWarps warps per pair i (nseg segments by query). Qt (nq, d, qlen): the queries
// transposed. The document of pair i is docs[i] (docs_shared: docs[i - seg[q]]). out[i] = sum_a max_t
// <Q[q, a], token t> (tokens normalised when DECODE); 0 for an empty document.
template <bool DECODE>
__global__ void exact_kernel(const float* __restrict__ Qt, int64_t qlen, int64_t d, const int32_t* __restrict__ docs,
                             bool docs_shared, const int64_t* __restrict__ seg, int nseg, Tokens tk,
                             const int64_t* __restrict__ doc_offsets, float* __restrict__ out) {
  extern __shared__ float smem[];  // kExactWarps * d token buffers, then kExactWarps * 32 maxima
  const int64_t i = blockIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int q = find_segment(seg, nseg, i);
  const int64_t doc = docs[docs_shared ? i - seg[q] : i];
  const int64_t lo = doc_offsets[doc], hi = doc_offsets[doc + 1];
  float* buf = smem + warp * d;
  float* red = smem + kExactWarps * d;
  const float* Qq = Qt + static_cast<int64_t>(q) * d * qlen;
  float score = 0.0f;
  for (int64_t a0 = 0; a0 < qlen; a0 += kWarp) {
    const int64_t a = a0 + lane;
    float m = -kInf;
    for (int64_t t = lo + warp; t < hi; t += kExactWarps) {
      const float inv = load_token<DECODE>(tk, t, d, buf, lane);
      __syncwarp();
      if (a < qlen) {
        float dot = 0.0f;
        for (int64_t j = 0; j < d; ++j) dot = fmaf(Qq[j * qlen + a], buf[j], dot);
        dot *= inv;
        m = dot > m ? dot : m;
      }
      __syncwarp();
    }
    red[warp * kWarp + lane] = m;
    __syncthreads();
    if (warp == 0) {
      float best = red[lane];
      for (int w = 1; w < kExactWarps; ++w) best = red[w * kWarp + lane] > best ? red[w * kWarp + lane] : best;
      score += warp_sum(a < qlen ? best : 0.0f);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[i] = hi > lo ? score : 0.0f;
}

template <bool DECODE>
void launch_exact(const float* Qt, int64_t qlen, int64_t d, const int32_t* docs, bool docs_shared,
                  const int64_t* seg, int nseg, int64_t total, const Tokens& tk, const int64_t* doc_offsets,
                  float* out) {
  if (total == 0) return;
  const size_t smem = sizeof(float) * static_cast<size_t>(kExactWarps * (d + kWarp));
  if (smem > 48 * 1024)
    PX_CUDA(cudaFuncSetAttribute(exact_kernel<DECODE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(smem)));
  exact_kernel<DECODE><<<static_cast<unsigned>(total), kExactWarps * kWarp, smem>>>(
      Qt, qlen, d, docs, docs_shared, seg, nseg, tk, doc_offsets, out);
  PX_LAUNCHED();
}

// One warp per token: out (n, d) decoded (and normalised) rows.
__global__ void decompress_kernel(Tokens tk, int64_t n, int64_t d, bool normalize, float* __restrict__ out) {
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (t >= n) return;
  float* o = out + t * d;
  const float inv = load_token<true>(tk, t, d, o, lane);
  if (normalize) {
    __syncwarp();
    for (int64_t j = lane; j < d; j += kWarp) o[j] *= inv;
  }
}

// -------------------------------------------------------------------------------------- helpers
unsigned blocks_for(int64_t threads, int block) { return static_cast<unsigned>(ceil_div(threads, block)); }

// Sorts keys[seg[q]:seg[q+1]] ascending for every q (device seg, nseg + 1 entries) into out.
void segmented_sort(const uint64_t* keys, uint64_t* out, int64_t total, const int64_t* seg, int nseg,
                    Buffer<uint8_t>& temp) {
  if (total == 0) return;
  if (total > INT_MAX) throw std::runtime_error("segmented_sort: more than 2^31 keys in one call");
  size_t bytes = 0;
  PX_CUDA(cub::DeviceSegmentedRadixSort::SortKeys(nullptr, bytes, keys, out, static_cast<int>(total), nseg, seg,
                                                  seg + 1));
  temp.resize(bytes);
  PX_CUDA(cub::DeviceSegmentedRadixSort::SortKeys(temp.get(), bytes, keys, out, static_cast<int>(total), nseg,
                                                  seg, seg + 1));
}

// sorted = the items of every segment ranked by (score descending, document ascending); see
// keys_by_doc_kernel for docs / docs_shared.
void rank_by_document(const float* scores, const int32_t* docs, bool docs_shared, const int64_t* seg, int nseg,
                      int64_t total, Buffer<uint64_t>& keys, Buffer<uint64_t>& sorted, Buffer<uint8_t>& temp) {
  keys.resize(static_cast<size_t>(total));
  sorted.resize(keys.size());
  if (total == 0) return;
  keys_by_doc_kernel<<<blocks_for(total, 256), 256>>>(scores, docs, docs_shared, seg, nseg, total, keys.get());
  PX_LAUNCHED();
  segmented_sort(keys.get(), sorted.get(), total, seg, nseg, temp);
}

// seg (n + 1) = exclusive prefix sums of sizes.
std::vector<int64_t> prefix(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> seg(sizes.size() + 1, 0);
  for (size_t i = 0; i < sizes.size(); ++i) seg[i + 1] = seg[i] + sizes[i];
  return seg;
}

// Q (nq, qlen, d) -> Qt (nq, d, qlen).
std::vector<float> transpose_queries(const float* Q, int64_t nq, int64_t qlen, int64_t d) {
  std::vector<float> Qt(static_cast<size_t>(nq * qlen * d));
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t a = 0; a < qlen; ++a)
      for (int64_t j = 0; j < d; ++j) Qt[(q * d + j) * qlen + a] = Q[(q * qlen + a) * d + j];
  return Qt;
}

void check_common(int64_t d, int nbits) {
  if (d <= 0 || d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (nbits != 1 && nbits != 2 && nbits != 4 && nbits != 8)
    throw std::invalid_argument("nbits must be 1, 2, 4 or 8");
}

void check_offsets(const int64_t* offsets, int64_t count, int64_t total, const char* name) {
  if (offsets[0] != 0 || offsets[count] != total)
    throw std::invalid_argument(std::string(name) + " must run from 0 to " + std::to_string(total));
  for (int64_t i = 0; i < count; ++i)
    if (offsets[i + 1] < offsets[i]) throw std::invalid_argument(std::string(name) + " must be non-decreasing");
}

// Queries per chunk so that the chunk's per-query buffers stay under `budget` bytes.
int64_t chunk_queries(int64_t nq, int64_t bytes_per_query, int64_t budget, int64_t cap) {
  return std::max<int64_t>(1, std::min<int64_t>({nq, cap, budget / std::max<int64_t>(bytes_per_query, 1)}));
}

}  // namespace

// ------------------------------------------------------------------------------------- Collection
// The device buffers of one search call. A Collection keeps one and reuses it (cudaMalloc and cudaFree
// cost far more than a small query's kernels); a call that finds it busy uses a fresh one.
struct Workspace {
  Buffer<uint8_t> allowed;
  Buffer<float> Q, Qt, S, St, Qq, qscale;
  Buffer<uint8_t> keep, flags, skipped, sel_skipped, temp;
  Buffer<int32_t> probed, cand, sel_docs, ex_docs;
  Buffer<int64_t> counts, seg, sel_seg, ex_seg;
  Buffer<float> pruned, sel_scores, ex_scores;
  Buffer<uint64_t> keys, sorted;
  Buffer<float> top_scores;
  Buffer<int64_t> top_docs;
};

struct Collection::Impl {
  int device = 0;
  int64_t n = 0, ndocs = 0, nlist = 0, d = 0, npairs = 0;
  int nbits = 0;
  bool has_ivf = false;
  Buffer<uint16_t> codes;
  Buffer<uint8_t> packed;
  Buffer<int64_t> doc_offsets;
  Buffer<float> centroids, centroids_t, weights;
  Buffer<float> pq_table, pq_levels;  // the pq codec, or empty
  // The centroids quantised (cpu/quantize.h), int8 values as floats, transposed (d, nlist), and their
  // scales; empty where d > cpu::kMaxQuantizedDim.
  Buffer<float> centroids_qt, cscale;
  Buffer<int32_t> ivf;
  Buffer<int64_t> ivf_offsets;
  Buffer<uint8_t> empty;  // (nlist,): the cell's list is empty (never probed while a non-empty one is left)
  // Each document's distinct cells (cpu::doc_cells: the inverted file transposed), which the centroid
  // interaction reads instead of every token's code: the same maxima, about a third of the reads.
  Buffer<uint16_t> cells;
  Buffer<int64_t> cell_offsets;
  mutable std::mutex ws_mutex;
  mutable Workspace ws;

  Tokens tokens() const {
    return Tokens::compressed(codes.get(), packed.get(), centroids.get(), weights.get(), nbits,
                              pq_table.size() ? pq_table.get() : nullptr, pq_levels.size() ? pq_levels.get() : nullptr);
  }
};

Collection::Collection(const uint16_t* codes, const uint8_t* packed, int64_t n, const int64_t* doc_offsets,
                       int64_t ndocs, const float* centroids, int64_t nlist, int64_t d, const float* weights,
                       int nbits, const int32_t* ivf, int64_t npairs, const int64_t* ivf_offsets, int device,
                       const float* pq_table, const float* pq_levels)
    : impl_(new Impl) {
  check_common(d, nbits);
  if (nlist < 1 || nlist > 65536) throw std::invalid_argument("nlist must be in [1, 65536]");
  if (ndocs < 0 || ndocs >= INT_MAX) throw std::invalid_argument("the CUDA kernels hold fewer than 2^31 documents");
  check_offsets(doc_offsets, ndocs, n, "doc_offsets");
  for (int64_t t = 0; t < n; ++t)
    if (codes[t] >= nlist) throw std::invalid_argument("codes: a centroid id is >= nlist");
  if (ivf != nullptr) {
    check_offsets(ivf_offsets, nlist, npairs, "ivf_offsets");
    for (int64_t e = 0; e < npairs; ++e)
      if (ivf[e] < 0 || ivf[e] >= ndocs) throw std::invalid_argument("ivf: an entry is outside [0, ndocs)");
  }
  Impl& m = *impl_;
  m.device = device;
  m.n = n;
  m.ndocs = ndocs;
  m.nlist = nlist;
  m.d = d;
  m.nbits = nbits;
  DeviceScope scope(device);
  m.codes.upload(codes, static_cast<size_t>(n));
  m.packed.upload(packed, static_cast<size_t>(n * d * nbits / 8));
  m.doc_offsets.upload(doc_offsets, static_cast<size_t>(ndocs + 1));
  m.centroids.upload(centroids, static_cast<size_t>(nlist * d));
  std::vector<float> ct(static_cast<size_t>(nlist * d));
  for (int64_t c = 0; c < nlist; ++c)
    for (int64_t j = 0; j < d; ++j) ct[j * nlist + c] = centroids[c * d + j];
  m.centroids_t.upload(ct.data(), ct.size());
  if (d <= cpu::kMaxQuantizedDim) {  // (non-finite centroids leave the quantised scores unavailable)
    std::vector<int8_t> cq(static_cast<size_t>(nlist * d));
    std::vector<float> cs(static_cast<size_t>(nlist));
    if (cpu::quantize_rows(centroids, nlist, d, cq.data(), cs.data())) {
      for (int64_t c = 0; c < nlist; ++c)
        for (int64_t j = 0; j < d; ++j) ct[j * nlist + c] = static_cast<float>(cq[c * d + j]);
      m.centroids_qt.upload(ct.data(), ct.size());
      m.cscale.upload(cs.data(), cs.size());
    }
  }
  if (pq_table != nullptr) {
    m.pq_table.upload(pq_table, static_cast<size_t>(256 * d));
    if (pq_levels != nullptr) m.pq_levels.upload(pq_levels, 16);
  } else {
    m.weights.upload(weights, static_cast<size_t>(d << nbits));
  }
  if (ivf != nullptr) {
    m.has_ivf = true;
    m.npairs = npairs;
    m.ivf.upload(ivf, static_cast<size_t>(npairs));
    m.ivf_offsets.upload(ivf_offsets, static_cast<size_t>(nlist + 1));
    std::vector<uint8_t> empty(static_cast<size_t>(nlist));
    for (int64_t c = 0; c < nlist; ++c) empty[c] = ivf_offsets[c + 1] == ivf_offsets[c] ? 1 : 0;
    m.empty.upload(empty.data(), empty.size());
    std::vector<int64_t> cell_offsets(static_cast<size_t>(ndocs + 1));
    std::vector<uint16_t> cells(static_cast<size_t>(npairs));
    cpu::doc_cells(ivf, npairs, ivf_offsets, nlist, ndocs, cell_offsets.data(), cells.data());
    m.cell_offsets.upload(cell_offsets.data(), cell_offsets.size());
    m.cells.upload(cells.data(), cells.size());
  }
}

Collection::~Collection() = default;

bool Collection::has_ivf() const { return impl_->has_ivf; }
int Collection::device() const { return impl_->device; }

int64_t Collection::device_bytes() const {
  const Impl& m = *impl_;
  return static_cast<int64_t>(m.codes.bytes() + m.packed.bytes() + m.doc_offsets.bytes() + m.centroids.bytes() +
                              m.centroids_t.bytes() + m.weights.bytes() + m.pq_table.bytes() + m.pq_levels.bytes() + m.ivf.bytes() + m.ivf_offsets.bytes() +
                              m.empty.bytes() + m.cells.bytes() + m.cell_offsets.bytes() +
                              m.centroids_qt.bytes() + m.cscale.bytes());
}

void Collection::search(const float* Q, int64_t nq, int64_t qlen, const uint8_t* allowed, const SearchParams& p,
                        float* out_scores, int64_t* out_docs) const {
  const Impl& m = *impl_;
  if (!m.has_ivf) throw std::invalid_argument("search: this collection was uploaded without its inverted file");
  if (qlen < 1) throw std::invalid_argument("queries need at least one token");
  if (p.nprobe < 1 || p.ndocs < 1 || p.n_exact < 1 || p.k < 1)
    throw std::invalid_argument("nprobe, ndocs, n_exact and k must be >= 1");
  const int64_t np = std::min(p.nprobe, m.nlist);
  const bool all_cells = np >= m.nlist;
  if (!all_cells && np > kMaxProbe)
    throw std::invalid_argument("CUDA search supports nprobe <= " + std::to_string(kMaxProbe) +
                                " or nprobe >= nlist (every cell); got " + std::to_string(p.nprobe));
  if (p.quantized && m.cscale.bytes() == 0)
    throw std::invalid_argument("search: quantised cell scores need d <= " + std::to_string(cpu::kMaxQuantizedDim) +
                                " and finite centroids");
  if (nq == 0) return;
  DeviceScope scope(m.device);
  std::unique_lock<std::mutex> lock(m.ws_mutex, std::try_to_lock);
  Workspace fresh;
  Workspace& w = lock.owns_lock() ? m.ws : fresh;
  if (allowed != nullptr) w.allowed.upload(allowed, static_cast<size_t>(m.ndocs));
  const uint8_t* allow = allowed != nullptr ? w.allowed.get() : nullptr;
  const int64_t P = all_cells ? m.nlist : qlen * np;
  const int64_t per_query = 2 * qlen * m.nlist * 4 + m.nlist + m.ndocs + 4 * qlen * m.d * 2 + P * 4;
  const int64_t nc_max = chunk_queries(nq, per_query, int64_t{1} << 30, 1024);

  Buffer<float>&dQ = w.Q, &dQt = w.Qt, &S = w.S, &St = w.St;
  Buffer<uint8_t>&keep = w.keep, &flags = w.flags, &skipped = w.skipped, &sel_skipped = w.sel_skipped,
  &temp = w.temp;
  Buffer<int32_t>&probed = w.probed, &cand = w.cand, &sel_docs = w.sel_docs, &ex_docs = w.ex_docs;
  Buffer<int64_t>&counts = w.counts, &seg = w.seg, &sel_seg = w.sel_seg, &ex_seg = w.ex_seg;
  Buffer<float>&pruned = w.pruned, &sel_scores = w.sel_scores, &ex_scores = w.ex_scores;
  Buffer<uint64_t>&keys = w.keys, &sorted = w.sorted;
  Buffer<float>& top_scores = w.top_scores;
  Buffer<int64_t>& top_docs = w.top_docs;
  const Tokens tk = m.tokens();
  constexpr int kThreads = 256;

  for (int64_t q0 = 0; q0 < nq; q0 += nc_max) {
    const int64_t nc = std::min(nc_max, nq - q0);
    const int ncs = static_cast<int>(nc);
    dQ.upload(Q + q0 * qlen * m.d, static_cast<size_t>(nc * qlen * m.d));
    const std::vector<float> Qt = transpose_queries(Q + q0 * qlen * m.d, nc, qlen, m.d);
    dQt.upload(Qt.data(), Qt.size());

    // 1. centroid scores in both layouts, kept cells
    S.resize(static_cast<size_t>(nc * qlen * m.nlist));
    St.resize(S.size());
    keep.resize(static_cast<size_t>(nc * m.nlist));
    const dim3 score_grid(blocks_for(m.nlist, kCellsPerBlock), static_cast<unsigned>(nc));
    if (p.quantized) {  // the query tokens quantised on the host, as the CPU search does
      std::vector<int8_t> qi(static_cast<size_t>(nc * qlen * m.d));
      std::vector<float> qs(static_cast<size_t>(nc * qlen));
      if (!cpu::quantize_rows(Q + q0 * qlen * m.d, nc * qlen, m.d, qi.data(), qs.data()))
        throw std::invalid_argument("search: quantised cell scores need finite query values");
      const std::vector<float> qf(qi.begin(), qi.end());
      w.Qq.upload(qf.data(), qf.size());
      w.qscale.upload(qs.data(), qs.size());
      scores_kernel<<<score_grid, kCellsPerBlock>>>(w.Qq.get(), qlen, m.d, m.centroids_qt.get(), m.nlist,
                                                    p.threshold, S.get(), St.get(), keep.get(), m.cscale.get(),
                                                    w.qscale.get());
    } else {
      scores_kernel<<<score_grid, kCellsPerBlock>>>(dQ.get(), qlen, m.d, m.centroids_t.get(), m.nlist,
                                                    p.threshold, S.get(), St.get(), keep.get());
    }
    PX_LAUNCHED();

    // 2. probed cells
    probed.resize(static_cast<size_t>(nc * P));
    if (all_cells) {
      iota_kernel<<<blocks_for(nc * P, kThreads), kThreads>>>(probed.get(), nc * P, P);
    } else {
      const int64_t rows = nc * qlen;
      const unsigned grid = blocks_for(rows * kWarp, kThreads);
      const int npi = static_cast<int>(np);
      const uint8_t* empty = m.empty.get();
      if (np <= 8) probe_kernel<8><<<grid, kThreads>>>(S.get(), empty, rows, m.nlist, npi, probed.get());
      else if (np <= 32) probe_kernel<32><<<grid, kThreads>>>(S.get(), empty, rows, m.nlist, npi, probed.get());
      else if (np <= 128) probe_kernel<128><<<grid, kThreads>>>(S.get(), empty, rows, m.nlist, npi, probed.get());
      else probe_kernel<kMaxProbe><<<grid, kThreads>>>(S.get(), empty, rows, m.nlist, npi, probed.get());
    }
    PX_LAUNCHED();

    // 3. candidates, ascending per query
    flags.resize(static_cast<size_t>(nc * m.ndocs));
    flags.zero();
    mark_kernel<<<dim3(static_cast<unsigned>(P), static_cast<unsigned>(nc)), 128>>>(
        probed.get(), P, m.ivf.get(), m.ivf_offsets.get(), allow, m.ndocs, p.max_list, flags.get());
    PX_LAUNCHED();
    counts.resize(static_cast<size_t>(nc));
    count_kernel<<<static_cast<unsigned>(nc), kScanThreads>>>(flags.get(), m.ndocs, counts.get());
    PX_LAUNCHED();
    std::vector<int64_t> h_counts(static_cast<size_t>(nc));
    counts.download(h_counts.data(), h_counts.size());
    const std::vector<int64_t> h_seg = prefix(h_counts);
    const int64_t total = h_seg.back();
    seg.upload(h_seg.data(), h_seg.size());
    cand.resize(static_cast<size_t>(total));
    compact_kernel<<<static_cast<unsigned>(nc), kScanThreads>>>(flags.get(), m.ndocs, seg.get(), cand.get());
    PX_LAUNCHED();

    // 4. pruned centroid interaction; the best ndocs of each query
    pruned.resize(static_cast<size_t>(total));
    skipped.resize(static_cast<size_t>(total));
    if (total > 0) {
      interaction_kernel<<<blocks_for(total * kWarp, kThreads), kThreads>>>(
          cand.get(), seg.get(), ncs, total, m.cell_offsets.get(), m.cells.get(), St.get(), m.nlist, qlen,
          keep.get(), nullptr, pruned.get(), skipped.get());
      PX_LAUNCHED();
      keys.resize(static_cast<size_t>(total));
      sorted.resize(keys.size());
      keys_by_index_kernel<<<blocks_for(total, kThreads), kThreads>>>(pruned.get(), seg.get(), ncs, total,
                                                                       keys.get());
      PX_LAUNCHED();
      segmented_sort(keys.get(), sorted.get(), total, seg.get(), ncs, temp);
    }
    std::vector<int64_t> take(static_cast<size_t>(nc));
    for (int64_t q = 0; q < nc; ++q) take[q] = std::min(h_counts[q], p.ndocs);
    const std::vector<int64_t> h_sel = prefix(take);
    const int64_t sel_total = h_sel.back();
    sel_seg.upload(h_sel.data(), h_sel.size());
    sel_docs.resize(static_cast<size_t>(sel_total));
    sel_scores.resize(static_cast<size_t>(sel_total));
    sel_skipped.resize(static_cast<size_t>(sel_total));
    if (sel_total > 0) {
      gather_top_kernel<<<blocks_for(sel_total, kThreads), kThreads>>>(
          sorted.get(), seg.get(), sel_seg.get(), ncs, sel_total, cand.get(), pruned.get(), skipped.get(),
          sel_docs.get(), sel_scores.get(), sel_skipped.get());
      PX_LAUNCHED();
      // 5. full centroid interaction of the kept documents that lost a token to pruning
      interaction_kernel<<<blocks_for(sel_total * kWarp, kThreads), kThreads>>>(
          sel_docs.get(), sel_seg.get(), ncs, sel_total, m.cell_offsets.get(), m.cells.get(), St.get(), m.nlist,
          qlen, nullptr, sel_skipped.get(), sel_scores.get(), nullptr);
      PX_LAUNCHED();
      rank_by_document(sel_scores.get(), sel_docs.get(), false, sel_seg.get(), ncs, sel_total, keys, sorted, temp);
    }
    for (int64_t q = 0; q < nc; ++q) take[q] = std::min(take[q], p.n_exact);
    const std::vector<int64_t> h_ex = prefix(take);
    const int64_t ex_total = h_ex.back();
    ex_seg.upload(h_ex.data(), h_ex.size());
    ex_docs.resize(static_cast<size_t>(ex_total));
    ex_scores.resize(static_cast<size_t>(ex_total));
    if (ex_total > 0) {
      gather_docs_kernel<<<blocks_for(ex_total, kThreads), kThreads>>>(sorted.get(), sel_seg.get(), ex_seg.get(),
                                                                        ncs, ex_total, ex_docs.get());
      PX_LAUNCHED();
      // 6. exact MaxSim of the decompressed tokens, top k
      launch_exact<true>(dQt.get(), qlen, m.d, ex_docs.get(), false, ex_seg.get(), ncs, ex_total, tk,
                         m.doc_offsets.get(), ex_scores.get());
      rank_by_document(ex_scores.get(), ex_docs.get(), false, ex_seg.get(), ncs, ex_total, keys, sorted, temp);
    }
    top_scores.resize(static_cast<size_t>(nc * p.k));
    top_docs.resize(top_scores.size());
    write_top_kernel<<<blocks_for(nc * p.k, kThreads), kThreads>>>(sorted.get(), ex_seg.get(), ncs, p.k,
                                                                   top_scores.get(), top_docs.get());
    PX_LAUNCHED();
    top_scores.download(out_scores + q0 * p.k, top_scores.size());
    top_docs.download(out_docs + q0 * p.k, top_docs.size());
  }
}

void Collection::exact_search(const float* Q, int64_t nq, int64_t qlen, const uint8_t* allowed, int64_t k,
                              float* out_scores, int64_t* out_docs) const {
  const Impl& m = *impl_;
  if (qlen < 1) throw std::invalid_argument("queries need at least one token");
  if (k < 1) throw std::invalid_argument("k must be >= 1");
  if (nq == 0) return;
  DeviceScope scope(m.device);
  std::vector<int32_t> docs;
  for (int64_t i = 0; i < m.ndocs; ++i)
    if (allowed == nullptr || allowed[i]) docs.push_back(static_cast<int32_t>(i));
  const int64_t na = static_cast<int64_t>(docs.size());
  Buffer<int32_t> d_docs;
  d_docs.upload(docs.data(), docs.size());
  // scores, keys and sorted keys per (query, document): 20 bytes, at most 1 GB per chunk
  const int64_t nc_max = chunk_queries(nq, 20 * na + 4 * qlen * m.d, int64_t{1} << 30, 4096);
  Buffer<float> dQt, scores, top_scores;
  Buffer<uint64_t> keys, sorted;
  Buffer<int64_t> seg, top_docs;
  Buffer<uint8_t> temp;
  constexpr int kThreads = 256;
  for (int64_t q0 = 0; q0 < nq; q0 += nc_max) {
    const int64_t nc = std::min(nc_max, nq - q0);
    const int ncs = static_cast<int>(nc);
    const std::vector<float> Qt = transpose_queries(Q + q0 * qlen * m.d, nc, qlen, m.d);
    dQt.upload(Qt.data(), Qt.size());
    std::vector<int64_t> h_seg(static_cast<size_t>(nc + 1));
    for (int64_t q = 0; q <= nc; ++q) h_seg[q] = q * na;
    seg.upload(h_seg.data(), h_seg.size());
    const int64_t total = nc * na;
    scores.resize(static_cast<size_t>(total));
    launch_exact<true>(dQt.get(), qlen, m.d, d_docs.get(), true, seg.get(), ncs, total, m.tokens(),
                       m.doc_offsets.get(), scores.get());
    rank_by_document(scores.get(), d_docs.get(), true, seg.get(), ncs, total, keys, sorted, temp);
    top_scores.resize(static_cast<size_t>(nc * k));
    top_docs.resize(top_scores.size());
    write_top_kernel<<<blocks_for(nc * k, kThreads), kThreads>>>(sorted.get(), seg.get(), ncs, k, top_scores.get(),
                                                                 top_docs.get());
    PX_LAUNCHED();
    top_scores.download(out_scores + q0 * k, top_scores.size());
    top_docs.download(out_docs + q0 * k, top_docs.size());
  }
}

// --------------------------------------------------------------------------------- one-shot kernels
void decompress(const uint16_t* codes, const uint8_t* packed, int64_t n, const float* centroids, int64_t nlist,
                int64_t d, const float* weights, int nbits, bool normalize, float* out, int device,
                const float* pq_table, const float* pq_levels) {
  check_common(d, nbits);
  for (int64_t t = 0; t < n; ++t)
    if (codes[t] >= nlist) throw std::invalid_argument("codes: a centroid id is >= nlist");
  if (n == 0) return;
  DeviceScope scope(device);
  Buffer<uint16_t> dc;
  Buffer<uint8_t> dp;
  Buffer<float> dcent, dw, dtab, dlev, dout(static_cast<size_t>(n * d));
  dc.upload(codes, static_cast<size_t>(n));
  dp.upload(packed, static_cast<size_t>(n * d * nbits / 8));
  dcent.upload(centroids, static_cast<size_t>(nlist * d));
  if (pq_table != nullptr) {
    dtab.upload(pq_table, static_cast<size_t>(256 * d));
    if (pq_levels != nullptr) dlev.upload(pq_levels, 16);
  } else {
    dw.upload(weights, static_cast<size_t>(d << nbits));
  }
  const Tokens tk = Tokens::compressed(dc.get(), dp.get(), dcent.get(), dw.get(), nbits,
                                       pq_table != nullptr ? dtab.get() : nullptr,
                                       pq_levels != nullptr ? dlev.get() : nullptr);
  decompress_kernel<<<blocks_for(n * kWarp, 256), 256>>>(tk, n, d, normalize, dout.get());
  PX_LAUNCHED();
  dout.download(out, static_cast<size_t>(n * d));
}

void maxsim(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* values, int64_t n,
            const int64_t* doc_offsets, int64_t ndocs, float* out, int device) {
  if (d <= 0 || d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (qlen < 1) throw std::invalid_argument("queries need at least one token");
  if (ndocs >= INT_MAX) throw std::invalid_argument("the CUDA kernels take fewer than 2^31 documents");
  check_offsets(doc_offsets, ndocs, n, "doc_offsets");
  if (nq == 0 || ndocs == 0) return;
  DeviceScope scope(device);
  Buffer<float> dQt, dv, dout(static_cast<size_t>(nq * ndocs));
  Buffer<int64_t> doffs, seg;
  Buffer<int32_t> docs;
  const std::vector<float> Qt = transpose_queries(Q, nq, qlen, d);
  dQt.upload(Qt.data(), Qt.size());
  dv.upload(values, static_cast<size_t>(n * d));
  doffs.upload(doc_offsets, static_cast<size_t>(ndocs + 1));
  std::vector<int32_t> h_docs(static_cast<size_t>(ndocs));
  for (int64_t i = 0; i < ndocs; ++i) h_docs[i] = static_cast<int32_t>(i);
  docs.upload(h_docs.data(), h_docs.size());
  std::vector<int64_t> h_seg(static_cast<size_t>(nq + 1));
  for (int64_t q = 0; q <= nq; ++q) h_seg[q] = q * ndocs;
  seg.upload(h_seg.data(), h_seg.size());
  Tokens tk;
  tk.values = dv.get();
  launch_exact<false>(dQt.get(), qlen, d, docs.get(), true, seg.get(), static_cast<int>(nq), nq * ndocs, tk,
                      doffs.get(), dout.get());
  dout.download(out, static_cast<size_t>(nq * ndocs));
}

void centroid_scores(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* centroids_t,
                     int64_t nlist, float* out, int device) {
  if (d <= 0 || d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (qlen < 1) throw std::invalid_argument("queries need at least one token");
  if (nq == 0) return;
  DeviceScope scope(device);
  Buffer<float> dQ, dct, dS(static_cast<size_t>(nq * qlen * nlist));
  dQ.upload(Q, static_cast<size_t>(nq * qlen * d));
  dct.upload(centroids_t, static_cast<size_t>(d * nlist));
  scores_kernel<<<dim3(blocks_for(nlist, kCellsPerBlock), static_cast<unsigned>(nq)), kCellsPerBlock>>>(
      dQ.get(), qlen, d, dct.get(), nlist, 0.0, dS.get(), nullptr, nullptr);
  PX_LAUNCHED();
  dS.download(out, dS.size());
}

DeviceInfo device_info() {
  DeviceInfo info;
  info.compiled_archs = PLAIDX_CUDA_ARCHS;
  cudaRuntimeGetVersion(&info.runtime_version);
  const cudaError_t e = cudaGetDeviceCount(&info.device_count);
  cudaDriverGetVersion(&info.driver_version);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the error of a machine without a driver
    info.device_count = 0;
    info.reason = info.driver_version == 0
                      ? std::string("no NVIDIA driver is installed (the CUDA kernels are built, but need a GPU)")
                      : std::string("no usable CUDA device: ") + cudaGetErrorString(e);
    return info;
  }
  if (info.device_count == 0) {
    info.reason = "no CUDA device is visible";
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    info.reason = "cudaGetDeviceProperties failed for device 0";
    return info;
  }
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.total_memory = static_cast<int64_t>(prop.totalGlobalMem);
  info.available = true;
  return info;
}

}  // namespace plaidx::cuda
