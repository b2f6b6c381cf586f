// stub.cpp: plaidx._cuda for a build without CUDA (no nvcc, PLAIDX_NO_CUDA, or a failed CUDA compile).
// The module still imports so that plaidx.build_info() can say why the GPU path is missing; every
// kernel raises RuntimeError with that reason. setup.py compiles this file instead of kernels.cu.
#include <stdexcept>
#include <string>

#include "cuda/api.h"

#ifndef PLAIDX_CUDA_STUB_REASON
#define PLAIDX_CUDA_STUB_REASON "plaidx was built without CUDA"
#endif

namespace plaidx::cuda {
namespace {

[[noreturn]] void unavailable() {
  throw std::runtime_error(std::string("plaidx was built without its CUDA kernels: ") + PLAIDX_CUDA_STUB_REASON +
                           ". Reinstall with nvcc available (CUDA_HOME or PLAIDX_NVCC) to use a GPU.");
}

}  // namespace

struct Collection::Impl {};

DeviceInfo device_info() {
  DeviceInfo info;
  info.reason = std::string("built without CUDA: ") + PLAIDX_CUDA_STUB_REASON;
  info.compiled_archs = "none";
  return info;
}

Collection::Collection(const uint16_t*, const uint8_t*, int64_t, const int64_t*, int64_t, const float*, int64_t,
                       int64_t, const float*, int, const int32_t*, int64_t, const int64_t*, int, const float*,
                       const float*) {
  unavailable();
}
Collection::~Collection() = default;
bool Collection::has_ivf() const { return false; }
int64_t Collection::device_bytes() const { return 0; }
int Collection::device() const { return -1; }
void Collection::search(const float*, int64_t, int64_t, const uint8_t*, const SearchParams&, float*,
                        int64_t*) const {
  unavailable();
}
void Collection::exact_search(const float*, int64_t, int64_t, const uint8_t*, int64_t, float*, int64_t*) const {
  unavailable();
}
void decompress(const uint16_t*, const uint8_t*, int64_t, const float*, int64_t, int64_t, const float*, int, bool,
                float*, int, const float*, const float*) {
  unavailable();
}
void maxsim(const float*, int64_t, int64_t, int64_t, const float*, int64_t, const int64_t*, int64_t, float*, int) {
  unavailable();
}
void centroid_scores(const float*, int64_t, int64_t, int64_t, const float*, int64_t, float*, int) { unavailable(); }

struct KMeans::Impl {};
KMeans::KMeans(const float*, int64_t, int64_t, int) { unavailable(); }
KMeans::~KMeans() = default;
void KMeans::assign(const float*, int64_t, int32_t*, float*) { unavailable(); }
void KMeans::update(int64_t, float*, float*) { unavailable(); }
int64_t KMeans::device_bytes() const { return 0; }

struct Compressor::Impl {};
Compressor::Compressor(const float*, int64_t, int64_t, const float*, int, int64_t, int) { unavailable(); }
Compressor::~Compressor() = default;
void Compressor::compress(const float*, int64_t, bool, uint16_t*, uint8_t*, float*) { unavailable(); }
int64_t Compressor::device_bytes() const { return 0; }

void assign(const float*, int64_t, int64_t, const float*, int64_t, int32_t*, float*, int) { unavailable(); }
void compress_residuals(const float*, int64_t, int64_t, const uint16_t*, const float*, int64_t, const float*, int,
                        uint8_t*, float*, int) {
  unavailable();
}

}  // namespace plaidx::cuda
