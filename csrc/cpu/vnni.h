// vnni.h: what the avx512-vnni kernels share (search.cpp's int8 cell scores, exact stage and rerank tier;
// assign.cpp's int8 candidate scores): the target attribute, the runtime check and the vpdpbusd step.
//
// PLAIDX_HAVE_VNNI is 1 where these kernels are compiled (GCC/clang on x86-64); have_vnni() says whether
// they run on this CPU. Thread-safety: header-only, no state except the cached CPU feature flag.
#pragma once

#include "cpu/simd.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define PLAIDX_HAVE_VNNI 1
#else
#define PLAIDX_HAVE_VNNI 0
#endif

namespace plaidx::cpu {

// Around the kernels: GCC 12's own intrinsics headers trip -W(maybe-)uninitialized on _mm512_undefined_* (a
// known false positive).
#if !defined(__clang__)
#define PLAIDX_VNNI_DIAGNOSTICS_PUSH                                \
  _Pragma("GCC diagnostic push")                                    \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")            \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define PLAIDX_VNNI_DIAGNOSTICS_POP _Pragma("GCC diagnostic pop")
#else
#define PLAIDX_VNNI_DIAGNOSTICS_PUSH
#define PLAIDX_VNNI_DIAGNOSTICS_POP
#endif

#if PLAIDX_HAVE_VNNI
#define PLAIDX_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

// Whether the avx512-vnni kernels run here (an avx512 CPU with VNNI, not capped by PLAIDX_SIMD).
inline bool have_vnni() {
#if PLAIDX_HAVE_DISPATCH
  static const bool ok = runtime_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512vnni") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return ok;
#elif defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  return true;
#else
  return false;
#endif
}

// acc += the 4-byte dot products of a (unsigned) and b (signed) per lane. GCC surrounds the intrinsic with
// register copies in the kernel's loop (about a fifth slower); the instruction itself accumulates in place.
PLAIDX_VNNI_TARGET inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
#if defined(__clang__)
  return _mm512_dpbusd_epi32(acc, a, b);
#else
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
#endif
}
#else
inline bool have_vnni() { return false; }
#endif

}  // namespace plaidx::cpu
