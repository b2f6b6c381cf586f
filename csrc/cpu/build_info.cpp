// build_info.cpp: build and runtime capabilities of the CPU kernels (see build_info.h).
#include "cpu/build_info.h"

#include "cpu/parallel.h"
#include "cpu/simd.h"

#ifndef PLAIDX_OPENMP_INFO
#define PLAIDX_OPENMP_INFO "unknown (built without setup.py)"
#endif

namespace plaidx::cpu {

BuildInfo build_info() {
  BuildInfo info;
#ifdef _OPENMP
  info.openmp = true;
  info.openmp_info = PLAIDX_OPENMP_INFO;
#else
  info.openmp = false;
  info.openmp_info = std::string("not compiled with OpenMP: ") + PLAIDX_OPENMP_INFO;
#endif
  info.max_threads = resolve_threads(0);

  // The compile-time baseline; info.simd becomes the kernel set this CPU actually runs (below).
  std::string baseline;
#if defined(__AVX512F__)
  baseline = "avx512f";
#elif defined(__AVX2__)
  baseline = "avx2";
#elif defined(__AVX__)
  baseline = "avx";
#elif defined(__SSE4_2__)
  baseline = "sse4.2";
#elif defined(__SSE2__) || defined(_M_X64)
  baseline = "sse2";
#elif defined(__ARM_NEON) || defined(__aarch64__)
  baseline = "neon";
#else
  baseline = "scalar";
#endif
#if PLAIDX_NATIVE_ARCH
  baseline += " (-march=native)";
#endif

  const Isa isa = runtime_isa();
  const char* running = isa == Isa::kAvx512 ? "avx512f" : isa == Isa::kAvx2 ? "avx2" : "baseline";
  info.simd = isa == Isa::kAvx512 ? "avx512f" : isa == Isa::kAvx2 ? "avx2" : baseline;
#if PLAIDX_HAVE_DISPATCH
  info.simd_dispatch = std::string("runtime avx512f/avx2/baseline dispatch (baseline compiled for ") + baseline +
                       "); this CPU runs " + running;
#else
  info.simd_dispatch = std::string("none (single target build for ") + baseline + ": " + running + ")";
#endif

#if defined(__clang__)
  info.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info.compiler = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  info.compiler = "msvc " + std::to_string(_MSC_VER);
#else
  info.compiler = "unknown";
#endif
  return info;
}

}  // namespace plaidx::cpu
