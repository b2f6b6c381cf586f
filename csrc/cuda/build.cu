// build.cu: the CUDA twins of the build kernels (see api.h, "Build"): nearest-centroid assignment with
// the argmax fused into the GEMM, the k-means centroid update, and residual bucketing + bit packing.
//
//   assign_kernel    one block per 128 tokens scans every centroid in tiles of 64: X and C tiles of 32
//                    dimensions in shared memory, an 8 x 4 register tile per thread, the running best
//                    (score desc, centroid asc) per token; scores (tokens x centroids) never leave the SM.
//                    Each dot product is one fmaf chain over the dimensions in ascending order.
//   sum_kernel       one warp per centroid, lanes over dimensions: the sum of its points in ascending
//                    point order (the order of faiss's compute_centroids), then times 1 / count.
//   compress_kernel  one warp per token, lanes over packed bytes: r = x - c[code], bucket = number of
//                    cutoffs <= r (csrc/cpu/codec.cpp), LSB-first packing, and the residual norm.
// All work of one object runs on its own non-blocking stream; results come back through pinned memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cub/cub.cuh>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/api.h"

namespace plaidx::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kTM = 128;  // tokens per assign block
constexpr int kTN = 64;   // centroids per tile
constexpr int kTK = 32;   // dimensions per shared-memory tile
constexpr int kRM = 8;    // tokens per thread
constexpr int kRN = 4;    // centroids per thread
constexpr int kAssignThreads = (kTM / kRM) * (kTN / kRN);  // 256
constexpr int kPad = 4;   // shared-memory row padding: fewer bank conflicts on the transposing stores, rows
                          // stay 16-byte aligned for the float4 loads
constexpr float kInf = std::numeric_limits<float>::infinity();

#define PX_CHECK(call) check((call), #call, __LINE__)

void check(cudaError_t e, const char* what, int line) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(e) + " (" + what + ", build.cu:" +
                             std::to_string(line) + ")");
}
#define PX_LAUNCHED() check(cudaGetLastError(), "kernel launch", __LINE__)

unsigned blocks(int64_t threads, int64_t per_block) {
  return static_cast<unsigned>((threads + per_block - 1) / per_block);
}

// Device memory on one stream; grows, never shrinks.
template <typename T>
class DBuf {
 public:
  DBuf() = default;
  ~DBuf() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
  void reserve(size_t n) {
    if (n <= cap_) return;
    if (p_ != nullptr) cudaFree(p_);
    p_ = nullptr;
    cap_ = 0;
    PX_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), std::max<size_t>(n, 1) * sizeof(T)));
    cap_ = n;
  }
  T* get() const { return p_; }
  size_t bytes() const { return cap_ * sizeof(T); }

 private:
  T* p_ = nullptr;
  size_t cap_ = 0;
};

class Scope {
 public:
  explicit Scope(int device) {
    PX_CHECK(cudaGetDevice(&prev_));
    changed_ = prev_ != device;
    if (changed_) PX_CHECK(cudaSetDevice(device));
  }
  ~Scope() {
    if (changed_) cudaSetDevice(prev_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

class Stream {
 public:
  Stream() { PX_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { PX_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_{};
};

void check_dims(int64_t d, int64_t nlist) {
  if (d <= 0 || d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (nlist < 1 || nlist > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("nlist must be in [1, 2^31)");
}

void check_nbits(int nbits) {
  if (nbits != 1 && nbits != 2 && nbits != 4 && nbits != 8)
    throw std::invalid_argument("nbits must be 1, 2, 4 or 8");
}

// ------------------------------------------------------------------------------------ assignment
__device__ __forceinline__ bool better(float s, int32_t c, float bs, int32_t bc) {
  return s > bs || (s == bs && c < bc);
}

// X (n, d), C (nlist, d), both row-major float32. codes[i] = argmax_c <X[i], C[c]> (lowest c among equal
// scores; a NaN score never wins), scores[i] = that maximum (optional).
__global__ void __launch_bounds__(kAssignThreads) assign_kernel(const float* __restrict__ X, int64_t n, int64_t d,
                                                                 const float* __restrict__ C, int64_t nlist,
                                                                 int32_t* __restrict__ codes,
                                                                 float* __restrict__ scores) {
  __shared__ __align__(16) float Xs[kTK][kTM + kPad];
  __shared__ __align__(16) float Cs[kTK][kTN + kPad];
  __shared__ float red_s[kTN / kRN][kTM];
  __shared__ int32_t red_c[kTN / kRN][kTM];
  const int tid = threadIdx.x;
  const int tx = tid % (kTN / kRN);  // centroid group: centroids tx * 4 .. + 3 of the tile
  const int ty = tid / (kTN / kRN);  // token group: tokens ty * 8 .. + 7 of the block
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTM;
  float best_s[kRM];
  int32_t best_c[kRM];
#pragma unroll
  for (int i = 0; i < kRM; ++i) {
    best_s[i] = -kInf;
    best_c[i] = INT32_MAX;
  }
  for (int64_t c0 = 0; c0 < nlist; c0 += kTN) {
    float acc[kRM][kRN];
#pragma unroll
    for (int i = 0; i < kRM; ++i)
#pragma unroll
      for (int j = 0; j < kRN; ++j) acc[i][j] = 0.0f;
    for (int64_t k0 = 0; k0 < d; k0 += kTK) {
      // X tile: 128 tokens x 32 dims; consecutive threads read consecutive dimensions of a row
      for (int e = tid; e < kTM * kTK; e += kAssignThreads) {
        const int m = e / kTK, k = e % kTK;
        const int64_t r = row0 + m, j = k0 + k;
        Xs[k][m] = (r < n && j < d) ? X[r * d + j] : 0.0f;
      }
      for (int e = tid; e < kTN * kTK; e += kAssignThreads) {
        const int c = e / kTK, k = e % kTK;
        const int64_t cc = c0 + c, j = k0 + k;
        Cs[k][c] = (cc < nlist && j < d) ? C[cc * d + j] : 0.0f;
      }
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kTK; ++k) {
        float xv[kRM], cv[kRN];
        const float4 x0 = *reinterpret_cast<const float4*>(&Xs[k][ty * kRM]);
        const float4 x1 = *reinterpret_cast<const float4*>(&Xs[k][ty * kRM + 4]);
        const float4 c4 = *reinterpret_cast<const float4*>(&Cs[k][tx * kRN]);
        xv[0] = x0.x; xv[1] = x0.y; xv[2] = x0.z; xv[3] = x0.w;
        xv[4] = x1.x; xv[5] = x1.y; xv[6] = x1.z; xv[7] = x1.w;
        cv[0] = c4.x; cv[1] = c4.y; cv[2] = c4.z; cv[3] = c4.w;
#pragma unroll
        for (int i = 0; i < kRM; ++i)
#pragma unroll
          for (int j = 0; j < kRN; ++j) acc[i][j] = fmaf(xv[i], cv[j], acc[i][j]);
      }
      __syncthreads();
    }
    // zero-padded dimensions add fmaf(0, 0, acc) = acc: the chain is the one over the real dimensions
#pragma unroll
    for (int j = 0; j < kRN; ++j) {
      const int64_t c = c0 + tx * kRN + j;
      if (c >= nlist) break;
#pragma unroll
      for (int i = 0; i < kRM; ++i)
        if (better(acc[i][j], static_cast<int32_t>(c), best_s[i], best_c[i])) {
          best_s[i] = acc[i][j];
          best_c[i] = static_cast<int32_t>(c);
        }
    }
  }
#pragma unroll
  for (int i = 0; i < kRM; ++i) {
    red_s[tx][ty * kRM + i] = best_s[i];
    red_c[tx][ty * kRM + i] = best_c[i];
  }
  __syncthreads();
  for (int m = tid; m < kTM; m += kAssignThreads) {
    float bs = red_s[0][m];
    int32_t bc = red_c[0][m];
    for (int g = 1; g < kTN / kRN; ++g)
      if (better(red_s[g][m], red_c[g][m], bs, bc)) {
        bs = red_s[g][m];
        bc = red_c[g][m];
      }
    const int64_t r = row0 + m;
    if (r < n) {
      codes[r] = bc == INT32_MAX ? 0 : bc;  // all scores NaN: centroid 0
      if (scores != nullptr) scores[r] = bs;
    }
  }
}

void launch_assign(const float* X, int64_t n, int64_t d, const float* C, int64_t nlist, int32_t* codes,
                   float* scores, cudaStream_t s) {
  if (n == 0) return;
  assign_kernel<<<blocks(n, kTM), kAssignThreads, 0, s>>>(X, n, d, C, nlist, codes, scores);
  PX_LAUNCHED();
}

// ------------------------------------------------------------------------------------- k-means
// counts[codes[i]] += 1 (integers: exact in any order).
__global__ void count_kernel(const int32_t* __restrict__ codes, int64_t n, int32_t* __restrict__ counts) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) atomicAdd(&counts[codes[i]], 1);
}

// One warp per centroid c: out[c] = (sum of X[order[offsets[c] .. offsets[c + 1])] in that order) * (1 / count),
// zeros for an empty centroid. order lists points by centroid, ascending within one (a stable sort).
__global__ void sum_kernel(const float* __restrict__ X, int64_t d, const int32_t* __restrict__ order,
                           const int32_t* __restrict__ offsets, int64_t nlist, float* __restrict__ out) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (c >= nlist) return;
  const int32_t lo = offsets[c], hi = offsets[c + 1];
  const float norm = hi > lo ? 1.0f / static_cast<float>(hi - lo) : 0.0f;
  for (int64_t j0 = 0; j0 < d; j0 += kWarp) {
    const int64_t j = j0 + lane;
    if (j >= d) break;
    float acc = 0.0f;
    for (int32_t t = lo; t < hi; ++t) acc += X[static_cast<int64_t>(order[t]) * d + j];
    out[c * d + j] = hi > lo ? acc * norm : 0.0f;
  }
}

__global__ void iota_kernel(int32_t* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<int32_t>(i);
}

// ----------------------------------------------------------------------------------- compression
// One warp per token t: packed[t] (pb bytes) = the bucket ids of x[t] - C[codes[t]], LSB first;
// norms[t] = |x[t] - C[codes[t]]|. cutoffs (d, 2^nbits - 1), ascending per row.
template <int NBITS>
__global__ void compress_kernel(const float* __restrict__ X, int64_t n, int64_t d, const int32_t* __restrict__ codes,
                                const float* __restrict__ C, const float* __restrict__ cutoffs,
                                uint8_t* __restrict__ packed, uint16_t* __restrict__ codes16,
                                float* __restrict__ norms) {
  constexpr int dpb = 8 / NBITS;
  constexpr int nc = (1 << NBITS) - 1;
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (t >= n) return;
  const int64_t pb = d / dpb;
  const int32_t code = codes[t];
  const float* x = X + t * d;
  const float* c = C + static_cast<int64_t>(code) * d;
  float ss = 0.0f;
  for (int64_t p = lane; p < pb; p += kWarp) {
    uint32_t byte = 0;
#pragma unroll
    for (int u = 0; u < dpb; ++u) {
      const int64_t j = p * dpb + u;
      const float r = x[j] - c[j];
      ss = fmaf(r, r, ss);
      const float* cut = cutoffs + j * nc;
      uint32_t b = 0;
      if constexpr (NBITS <= 4) {
#pragma unroll
        for (int k = 0; k < nc; ++k) b += cut[k] <= r ? 1u : 0u;
      } else {  // upper bound on a sorted row: the same count
        int lo = 0, len = nc;
        while (len > 0) {
          const int half = len / 2;
          if (cut[lo + half] <= r) {
            lo += half + 1;
            len -= half + 1;
          } else {
            len = half;
          }
        }
        b = static_cast<uint32_t>(lo);
      }
      byte |= b << (u * NBITS);
    }
    packed[t * pb + p] = static_cast<uint8_t>(byte);
  }
  for (int off = kWarp / 2; off > 0; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if (lane == 0) {
    norms[t] = sqrtf(ss);
    codes16[t] = static_cast<uint16_t>(code);
  }
}

void launch_compress(const float* X, int64_t n, int64_t d, const int32_t* codes, const float* C,
                     const float* cutoffs, int nbits, uint8_t* packed, uint16_t* codes16, float* norms,
                     cudaStream_t s) {
  if (n == 0) return;
  const unsigned g = blocks(n * kWarp, 256);
  switch (nbits) {
    case 1: compress_kernel<1><<<g, 256, 0, s>>>(X, n, d, codes, C, cutoffs, packed, codes16, norms); break;
    case 2: compress_kernel<2><<<g, 256, 0, s>>>(X, n, d, codes, C, cutoffs, packed, codes16, norms); break;
    case 4: compress_kernel<4><<<g, 256, 0, s>>>(X, n, d, codes, C, cutoffs, packed, codes16, norms); break;
    default: compress_kernel<8><<<g, 256, 0, s>>>(X, n, d, codes, C, cutoffs, packed, codes16, norms); break;
  }
  PX_LAUNCHED();
}

}  // namespace

// --------------------------------------------------------------------------------------- KMeans
struct KMeans::Impl {
  int device = 0;
  int64_t n = 0, d = 0;
  int64_t assigned_nlist = 0;  // nlist of the last assign(): update() needs codes < nlist
  Stream stream;
  DBuf<float> X, C, means, scores;
  DBuf<int32_t> codes, sorted_codes, order, order_in, counts, offsets;
  DBuf<uint8_t> temp;
};

KMeans::KMeans(const float* x, int64_t n, int64_t d, int device) {
  if (d <= 0 || d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (n < 1 || n >= std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("k-means takes between 1 and 2^31 - 1 points");
  Scope scope(device);
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  m.device = device;
  m.n = n;
  m.d = d;
  m.X.reserve(static_cast<size_t>(n * d));
  PX_CHECK(cudaMemcpyAsync(m.X.get(), x, sizeof(float) * n * d, cudaMemcpyHostToDevice, m.stream.get()));
  m.codes.reserve(static_cast<size_t>(n));
  m.scores.reserve(static_cast<size_t>(n));
  m.stream.sync();
}

KMeans::~KMeans() {
  if (impl_) {  // free on the object's device (never throws: errors at teardown are ignored)
    int prev = 0;
    const bool ok = cudaGetDevice(&prev) == cudaSuccess && cudaSetDevice(impl_->device) == cudaSuccess;
    impl_.reset();
    if (ok) cudaSetDevice(prev);
  }
}

int64_t KMeans::device_bytes() const {
  const Impl& m = *impl_;
  return static_cast<int64_t>(m.X.bytes() + m.C.bytes() + m.means.bytes() + m.scores.bytes() + m.codes.bytes() +
                              m.sorted_codes.bytes() + m.order.bytes() + m.order_in.bytes() + m.counts.bytes() +
                              m.offsets.bytes() + m.temp.bytes());
}

void KMeans::assign(const float* centroids, int64_t nlist, int32_t* codes, float* scores) {
  Impl& m = *impl_;
  check_dims(m.d, nlist);
  Scope scope(m.device);
  cudaStream_t s = m.stream.get();
  m.C.reserve(static_cast<size_t>(nlist * m.d));
  PX_CHECK(cudaMemcpyAsync(m.C.get(), centroids, sizeof(float) * nlist * m.d, cudaMemcpyHostToDevice, s));
  launch_assign(m.X.get(), m.n, m.d, m.C.get(), nlist, m.codes.get(), m.scores.get(), s);
  m.assigned_nlist = nlist;
  if (codes != nullptr)
    PX_CHECK(cudaMemcpyAsync(codes, m.codes.get(), sizeof(int32_t) * m.n, cudaMemcpyDeviceToHost, s));
  if (scores != nullptr)
    PX_CHECK(cudaMemcpyAsync(scores, m.scores.get(), sizeof(float) * m.n, cudaMemcpyDeviceToHost, s));
  m.stream.sync();
}

void KMeans::update(int64_t nlist, float* means, float* counts) {
  Impl& m = *impl_;
  check_dims(m.d, nlist);
  if (m.assigned_nlist != nlist)
    throw std::invalid_argument("KMeans.update(nlist) needs a previous assign() to nlist centroids");
  Scope scope(m.device);
  cudaStream_t s = m.stream.get();
  const int n = static_cast<int>(m.n);
  m.sorted_codes.reserve(static_cast<size_t>(n));
  m.order.reserve(static_cast<size_t>(n));
  m.order_in.reserve(static_cast<size_t>(n));
  m.counts.reserve(static_cast<size_t>(nlist + 1));
  m.offsets.reserve(static_cast<size_t>(nlist + 1));
  m.means.reserve(static_cast<size_t>(nlist * m.d));
  iota_kernel<<<blocks(n, 256), 256, 0, s>>>(m.order_in.get(), n);
  PX_LAUNCHED();
  // a stable radix sort of (code, point) by code: points of one centroid stay in ascending order
  int end_bit = 1;
  while (end_bit < 31 && (int64_t{1} << end_bit) < nlist) ++end_bit;
  size_t bytes = 0;
  PX_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, m.codes.get(), m.sorted_codes.get(), m.order_in.get(),
                                           m.order.get(), n, 0, end_bit, s));
  m.temp.reserve(bytes);
  PX_CHECK(cub::DeviceRadixSort::SortPairs(m.temp.get(), bytes, m.codes.get(), m.sorted_codes.get(),
                                           m.order_in.get(), m.order.get(), n, 0, end_bit, s));
  PX_CHECK(cudaMemsetAsync(m.counts.get(), 0, sizeof(int32_t) * (nlist + 1), s));
  count_kernel<<<blocks(n, 256), 256, 0, s>>>(m.codes.get(), n, m.counts.get());
  PX_LAUNCHED();
  bytes = 0;
  PX_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, m.counts.get(), m.offsets.get(), static_cast<int>(nlist + 1),
                                         s));
  m.temp.reserve(bytes);
  PX_CHECK(cub::DeviceScan::ExclusiveSum(m.temp.get(), bytes, m.counts.get(), m.offsets.get(),
                                         static_cast<int>(nlist + 1), s));
  sum_kernel<<<blocks(nlist * kWarp, 256), 256, 0, s>>>(m.X.get(), m.d, m.order.get(), m.offsets.get(), nlist,
                                                         m.means.get());
  PX_LAUNCHED();
  std::vector<int32_t> h_counts(static_cast<size_t>(nlist));
  PX_CHECK(cudaMemcpyAsync(means, m.means.get(), sizeof(float) * nlist * m.d, cudaMemcpyDeviceToHost, s));
  PX_CHECK(cudaMemcpyAsync(h_counts.data(), m.counts.get(), sizeof(int32_t) * nlist, cudaMemcpyDeviceToHost, s));
  m.stream.sync();
  for (int64_t c = 0; c < nlist; ++c) counts[c] = static_cast<float>(h_counts[c]);
}

// ----------------------------------------------------------------------------------- Compressor
struct Compressor::Impl {
  int device = 0;
  int64_t nlist = 0, d = 0, chunk = 0;
  int nbits = 0;
  Stream stream;
  DBuf<float> C, cutoffs, X, norms, scores;
  DBuf<int32_t> codes;
  DBuf<uint16_t> codes16;
  DBuf<uint8_t> packed;
};

Compressor::Compressor(const float* centroids, int64_t nlist, int64_t d, const float* cutoffs, int nbits,
                       int64_t chunk_rows, int device) {
  check_dims(d, nlist);
  check_nbits(nbits);
  if (nlist > 65536) throw std::invalid_argument("nlist must be at most 65536 (codes are uint16)");
  if (chunk_rows < 1) throw std::invalid_argument("chunk_rows must be >= 1");
  const int64_t nc = (int64_t{1} << nbits) - 1;
  for (int64_t j = 0; j < d; ++j)
    for (int64_t c = 0; c + 1 < nc; ++c)
      if (!(cutoffs[j * nc + c] <= cutoffs[j * nc + c + 1]))
        throw std::invalid_argument("cutoffs must be ascending (and not NaN) along each row; row " +
                                    std::to_string(j) + " is not");
  Scope scope(device);
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  m.device = device;
  m.nlist = nlist;
  m.d = d;
  m.nbits = nbits;
  m.chunk = chunk_rows;
  cudaStream_t s = m.stream.get();
  m.C.reserve(static_cast<size_t>(nlist * d));
  m.cutoffs.reserve(static_cast<size_t>(d * nc));
  PX_CHECK(cudaMemcpyAsync(m.C.get(), centroids, sizeof(float) * nlist * d, cudaMemcpyHostToDevice, s));
  PX_CHECK(cudaMemcpyAsync(m.cutoffs.get(), cutoffs, sizeof(float) * d * nc, cudaMemcpyHostToDevice, s));
  const size_t rows = static_cast<size_t>(chunk_rows);
  m.X.reserve(rows * static_cast<size_t>(d));
  m.norms.reserve(rows);
  m.scores.reserve(rows);
  m.codes.reserve(rows);
  m.codes16.reserve(rows);
  m.packed.reserve(rows * static_cast<size_t>(d * nbits / 8));
  m.stream.sync();
}

Compressor::~Compressor() {
  if (impl_) {
    int prev = 0;
    const bool ok = cudaGetDevice(&prev) == cudaSuccess && cudaSetDevice(impl_->device) == cudaSuccess;
    impl_.reset();
    if (ok) cudaSetDevice(prev);
  }
}

int64_t Compressor::device_bytes() const {
  const Impl& m = *impl_;
  return static_cast<int64_t>(m.C.bytes() + m.cutoffs.bytes() + m.X.bytes() + m.norms.bytes() + m.scores.bytes() +
                              m.codes.bytes() + m.codes16.bytes() + m.packed.bytes());
}

void Compressor::compress(const float* x, int64_t n, bool on_device, uint16_t* codes, uint8_t* packed,
                          float* norms) {
  Impl& m = *impl_;
  if (n < 0) throw std::invalid_argument("n must be >= 0");
  Scope scope(m.device);
  cudaStream_t s = m.stream.get();
  const int64_t pb = m.d * m.nbits / 8;
  for (int64_t r0 = 0; r0 < n; r0 += m.chunk) {
    const int64_t rows = std::min(m.chunk, n - r0);
    const float* dx = x + r0 * m.d;
    if (!on_device) {
      PX_CHECK(cudaMemcpyAsync(m.X.get(), dx, sizeof(float) * rows * m.d, cudaMemcpyHostToDevice, s));
      dx = m.X.get();
    }
    launch_assign(dx, rows, m.d, m.C.get(), m.nlist, m.codes.get(), nullptr, s);
    launch_compress(dx, rows, m.d, m.codes.get(), m.C.get(), m.cutoffs.get(), m.nbits, m.packed.get(),
                    m.codes16.get(), m.norms.get(), s);
    PX_CHECK(cudaMemcpyAsync(codes + r0, m.codes16.get(), sizeof(uint16_t) * rows, cudaMemcpyDeviceToHost, s));
    PX_CHECK(cudaMemcpyAsync(packed + r0 * pb, m.packed.get(), static_cast<size_t>(rows * pb), cudaMemcpyDeviceToHost,
                             s));
    PX_CHECK(cudaMemcpyAsync(norms + r0, m.norms.get(), sizeof(float) * rows, cudaMemcpyDeviceToHost, s));
    m.stream.sync();  // the input chunk buffer is reused by the next chunk
  }
}

// ------------------------------------------------------------------------------- one-shot kernels
void assign(const float* x, int64_t n, int64_t d, const float* centroids, int64_t nlist, int32_t* codes,
            float* scores, int device) {
  check_dims(d, nlist);
  if (n == 0) return;
  if (n >= std::numeric_limits<int32_t>::max()) throw std::invalid_argument("assign takes fewer than 2^31 rows");
  KMeans km(x, n, d, device);
  km.assign(centroids, nlist, codes, scores);
}

void compress_residuals(const float* x, int64_t n, int64_t d, const uint16_t* codes, const float* centroids,
                        int64_t nlist, const float* cutoffs, int nbits, uint8_t* packed, float* norms, int device) {
  check_dims(d, nlist);
  check_nbits(nbits);
  for (int64_t t = 0; t < n; ++t)
    if (codes[t] >= nlist) throw std::invalid_argument("codes: a centroid id is >= nlist");
  if (n == 0) return;
  Scope scope(device);
  Stream stream;
  cudaStream_t s = stream.get();
  const int64_t nc = (int64_t{1} << nbits) - 1, pb = d * nbits / 8;
  DBuf<float> dx, dc, dcut, dn;
  DBuf<int32_t> dcodes;
  DBuf<uint16_t> d16;
  DBuf<uint8_t> dp;
  dx.reserve(static_cast<size_t>(n * d));
  dc.reserve(static_cast<size_t>(nlist * d));
  dcut.reserve(static_cast<size_t>(d * nc));
  dn.reserve(static_cast<size_t>(n));
  dcodes.reserve(static_cast<size_t>(n));
  d16.reserve(static_cast<size_t>(n));
  dp.reserve(static_cast<size_t>(n * pb));
  std::vector<int32_t> codes32(codes, codes + n);
  PX_CHECK(cudaMemcpyAsync(dx.get(), x, sizeof(float) * n * d, cudaMemcpyHostToDevice, s));
  PX_CHECK(cudaMemcpyAsync(dc.get(), centroids, sizeof(float) * nlist * d, cudaMemcpyHostToDevice, s));
  PX_CHECK(cudaMemcpyAsync(dcut.get(), cutoffs, sizeof(float) * d * nc, cudaMemcpyHostToDevice, s));
  PX_CHECK(cudaMemcpyAsync(dcodes.get(), codes32.data(), sizeof(int32_t) * n, cudaMemcpyHostToDevice, s));
  launch_compress(dx.get(), n, d, dcodes.get(), dc.get(), dcut.get(), nbits, dp.get(), d16.get(), dn.get(), s);
  PX_CHECK(cudaMemcpyAsync(packed, dp.get(), static_cast<size_t>(n * pb), cudaMemcpyDeviceToHost, s));
  PX_CHECK(cudaMemcpyAsync(norms, dn.get(), sizeof(float) * n, cudaMemcpyDeviceToHost, s));
  stream.sync();
}

}  // namespace plaidx::cuda
