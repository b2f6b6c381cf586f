// api.h: the CUDA twins of the CPU kernels, behind a plain C++ interface (no CUDA types), so that the
// pybind11 bindings compile with the host compiler and only csrc/cuda/*.cu needs nvcc.
//
// Semantics are those of plaidx/_kernels.py (the CPU contract) with one difference: sums are taken in a
// different (fixed) order on the GPU, so scores agree with the CPU kernels to float rounding (about
// 1e-6 relative), and a ranking can differ only between documents whose scores are that close. Results
// are deterministic: every score has one fixed sequence of operations (no atomics on floats) and every
// selection sorts by the strict total order of topk.h (score descending, NaN as -inf, then document
// ascending).
//
// Host buffers are C-contiguous and caller-owned, with the shapes of the CPU kernels. Errors: invalid
// arguments throw std::invalid_argument, CUDA failures (no device, out of memory) std::runtime_error
// with the CUDA error string.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace plaidx::cuda {

struct DeviceInfo {
  bool available = false;
  std::string reason;  // why not, when !available
  int device_count = 0;
  std::string name;    // of device 0
  int major = 0, minor = 0;
  int64_t total_memory = 0;
  int runtime_version = 0, driver_version = 0;
  std::string compiled_archs;
};

DeviceInfo device_info();

struct SearchParams {
  int64_t nprobe;
  double threshold;
  int64_t ndocs;
  int64_t n_exact;
  int64_t k;
  // The quantised cell scores of cpu/quantize.h (the CPU search's with cell_codes), bit for bit: the
  // int8 values are summed as floats, which is exact for d <= cpu::kMaxQuantizedDim.
  bool quantized = false;
  // Step 3 takes no documents from a probed cell whose list holds more than max_list (cpu::SearchParams); 0: all.
  int64_t max_list = 0;
};

// A compressed collection (and optionally its inverted file) copied to one GPU. The host arrays are
// validated once here (codes < nlist, offsets increasing, ivf entries in range), so the kernels can
// trust them. Methods may be called from several host threads; each call uses its own buffers.
class Collection {
 public:
  Collection(const uint16_t* codes, const uint8_t* packed, int64_t n, const int64_t* doc_offsets,
             int64_t ndocs, const float* centroids, int64_t nlist, int64_t d, const float* weights, int nbits,
             const int32_t* ivf, int64_t npairs, const int64_t* ivf_offsets, int device,
             const float* pq_table = nullptr, const float* pq_levels = nullptr);
  ~Collection();
  Collection(const Collection&) = delete;
  Collection& operator=(const Collection&) = delete;

  bool has_ivf() const;
  int64_t device_bytes() const;
  int device() const;

  // PLAID search, steps 1-5 of plaidx/_kernels.py. allowed: (ndocs,) or nullptr. Q (nq, qlen, d).
  void search(const float* Q, int64_t nq, int64_t qlen, const uint8_t* allowed, const SearchParams& p,
              float* out_scores, int64_t* out_docs) const;
  // Exhaustive exact MaxSim over every allowed document, top k.
  void exact_search(const float* Q, int64_t nq, int64_t qlen, const uint8_t* allowed, int64_t k,
                    float* out_scores, int64_t* out_docs) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// One-shot kernels (upload, run, download) with the CPU kernels' contracts. pq_table (d * nbits / 8, 256,
// 8 / nbits) and pq_levels (16,) or nullptr, here and in Collection: the pq residual codec (cpu/token.h)
// instead of weights.
void decompress(const uint16_t* codes, const uint8_t* packed, int64_t n, const float* centroids, int64_t nlist,
                int64_t d, const float* weights, int nbits, bool normalize, float* out, int device,
                const float* pq_table = nullptr, const float* pq_levels = nullptr);
void maxsim(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* values, int64_t n,
            const int64_t* doc_offsets, int64_t ndocs, float* out, int device);
void centroid_scores(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* centroids_t,
                     int64_t nlist, float* out, int device);

// ------------------------------------------------------------------------------------------ build
// The build kernels (csrc/cuda/build.cu). Nearest centroid = the largest inner product, the lowest
// centroid id among equal scores (as faiss's flat search); each score is one float fma chain over the
// dimensions in ascending order, so it can differ from a CPU GEMM in the last bits and a token whose two
// best centroids score that close can get the other one. Compression of a given (token, code) is exact:
// the same bytes as cpu::compress of the residual x - centroids[code].

// Points kept on one GPU for the iterations of k-means (faiss's Lloyd step, split in two so that the
// host handles empty clusters and normalisation with faiss's rules). One object per host thread.
class KMeans {
 public:
  // x (n, d) float32, 1 <= n < 2^31, d a positive multiple of 8.
  KMeans(const float* x, int64_t n, int64_t d, int device);
  ~KMeans();
  KMeans(const KMeans&) = delete;
  KMeans& operator=(const KMeans&) = delete;
  // Nearest of centroids (nlist, d) for every point: codes (n,) int32 and scores (n,) float32, each
  // optional (nullptr); the codes stay on the device for update().
  void assign(const float* centroids, int64_t nlist, int32_t* codes, float* scores);
  // From the codes of the last assign(): means (nlist, d) = the points of each centroid summed in
  // ascending point order, times 1 / count (zeros when empty), and counts (nlist,) as floats.
  void update(int64_t nlist, float* means, float* counts);
  int64_t device_bytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The codec on one GPU: assignment and residual compression of batches, only codes, packed bytes and
// residual norms coming back. One object per host thread.
class Compressor {
 public:
  // centroids (nlist, d), nlist <= 65536; cutoffs (d, 2^nbits - 1) ascending per row (checked);
  // chunk_rows: rows per kernel launch (bounds the device memory: about chunk_rows * (4 d + 16) bytes).
  Compressor(const float* centroids, int64_t nlist, int64_t d, const float* cutoffs, int nbits,
             int64_t chunk_rows, int device);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;
  // x (n, d) float32: host memory, or device memory of this object's GPU when on_device (whose writer
  // has finished: the caller synchronises its stream first). Out (host): codes (n,), packed (n, d *
  // nbits / 8), norms (n,) the residual L2 norms.
  void compress(const float* x, int64_t n, bool on_device, uint16_t* codes, uint8_t* packed, float* norms);
  int64_t device_bytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// One-shot: codes (n,) int32 and scores (n,) (optional) of the nearest of centroids (nlist, d).
void assign(const float* x, int64_t n, int64_t d, const float* centroids, int64_t nlist, int32_t* codes,
            float* scores, int device);
// One-shot: packed (n, d * nbits / 8) and norms (n,) of the residuals x - centroids[codes].
void compress_residuals(const float* x, int64_t n, int64_t d, const uint16_t* codes, const float* centroids,
                        int64_t nlist, const float* cutoffs, int nbits, uint8_t* packed, float* norms, int device);

}  // namespace plaidx::cuda
