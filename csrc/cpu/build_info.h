// build_info.h: what this build of the CPU kernels has (OpenMP, threads, SIMD targets, compiler).
// Thread-safety: pure function.
#pragma once

#include <string>

namespace plaidx::cpu {

struct BuildInfo {
  bool openmp;
  std::string openmp_info;    // how OpenMP was found at build time, or why not
  int max_threads;            // omp_get_max_threads(), 1 without OpenMP
  std::string simd;           // the kernel set this CPU runs (avx512f, avx2, or the compiled baseline)
  std::string simd_dispatch;  // runtime dispatch of the hot kernels, and what this CPU picks
  std::string compiler;
};

BuildInfo build_info();

}  // namespace plaidx::cpu
