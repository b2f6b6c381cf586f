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
                           ". Reinstall with nvcc available (CUDA_HOME or PLAIDX_NVCC) to search on a GPU.");
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
                       int64_t, const float*, int, const int32_t*, int64_t, const int64_t*, int) {
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
                float*, int) {
  unavailable();
}
void maxsim(const float*, int64_t, int64_t, int64_t, const float*, int64_t, const int64_t*, int64_t, float*, int) {
  unavailable();
}
void centroid_scores(const float*, int64_t, int64_t, int64_t, const float*, int64_t, float*, int) { unavailable(); }

}  // namespace plaidx::cuda
