// simd.h: portable 8-lane float vector and the runtime SIMD dispatch macros of the CPU kernels.
//
// v8f is a GCC/clang vector extension (one AVX register in the avx2 copy of a worker, two SSE
// registers in the baseline copy) or, on other compilers, a plain struct with the same operations.
// Every operation is element-wise, so a value computed with v8f is bit-identical in every copy and
// with every compiler: no reassociation, no fused multiply-add (FMA is not enabled).
//
// Runtime dispatch: a hot worker is written once as an inline `name_impl`; PLAIDX_DISPATCH then
// defines `name` calling a copy compiled with __attribute__((target("avx2"))) when the CPU (and OS)
// support AVX2, else a baseline copy (GCC/clang on x86-64; elsewhere `name` calls the impl). Parallel
// regions never live in the dispatched workers: drivers call them from inside the region. (GCC's
// target_clones is not used: it lowers 8-lane broadcasts for the baseline before cloning, which
// leaves the avx2 clone with slow lane inserts.) Both copies compute bit-identical results.
//
// Thread-safety: header-only pure helpers, no state except the cached CPU feature flag.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__)
#define PLAIDX_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define PLAIDX_INLINE __forceinline
#else
#define PLAIDX_INLINE inline
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX2__) && !defined(PLAIDX_NO_DISPATCH)
#define PLAIDX_HAVE_DISPATCH 1
namespace plaidx::cpu {
// True when this CPU and OS run AVX2 code (checked once).
inline bool cpu_has_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}
}  // namespace plaidx::cpu
#define PLAIDX_DISPATCH(ret, name, params, args)                                      \
  __attribute__((target("avx2"))) ret name##_avx2 params { return name##_impl args; } \
  ret name##_base params { return name##_impl args; }                                 \
  ret name params { return ::plaidx::cpu::cpu_has_avx2() ? name##_avx2 args : name##_base args; }
#else
#define PLAIDX_HAVE_DISPATCH 0
#define PLAIDX_DISPATCH(ret, name, params, args) \
  ret name params { return name##_impl args; }
#endif

namespace plaidx::cpu {

#if defined(__GNUC__)

// The helpers below are always inlined, so the by-value vector ABI note (-Wpsabi) does not apply.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

PLAIDX_INLINE v8f vzero() { return v8f{0, 0, 0, 0, 0, 0, 0, 0}; }
// Broadcasts are written as scalar-vector operations (s * v, v / s) at the point of use: a helper
// returning a broadcast vector is lowered for the baseline target before it is inlined into the avx2
// copy and ends up as a chain of lane inserts.
PLAIDX_INLINE v8f vload(const float* p) {
  v8f r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
PLAIDX_INLINE void vstore(float* p, v8f x) { std::memcpy(p, &x, sizeof(x)); }
// Lane-wise "x > m ? x : m": the running-maximum update used everywhere (a NaN x never replaces m).
PLAIDX_INLINE v8f vmax_update(v8f m, v8f x) {
  v8i gt = x > m;
  return (v8f)(((v8i)x & gt) | ((v8i)m & ~gt));
}
PLAIDX_INLINE float vlane(v8f x, int i) { return x[i]; }

// o[0:N] = a[0:N] + b[0:N] for N in {1, 2, 4, 8}, as one vector addition.
typedef float v4f __attribute__((vector_size(16)));
typedef float v2f __attribute__((vector_size(8)));
template <int N>
PLAIDX_INLINE void add_small(float* o, const float* a, const float* b) {
  if constexpr (N == 8) {
    vstore(o, vload(a) + vload(b));
  } else if constexpr (N == 4 || N == 2) {
    using V = typename std::conditional<N == 4, v4f, v2f>::type;
    V x, y;
    std::memcpy(&x, a, sizeof(V));
    std::memcpy(&y, b, sizeof(V));
    x += y;
    std::memcpy(o, &x, sizeof(V));
  } else {
    for (int i = 0; i < N; ++i) o[i] = a[i] + b[i];
  }
}

#else  // plain struct fallback with the same semantics

struct v8f {
  float v[8];
  v8f& operator+=(const v8f& o) {
    for (int i = 0; i < 8; ++i) v[i] += o.v[i];
    return *this;
  }
};
inline v8f operator*(const v8f& a, const v8f& b) {
  v8f r;
  for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] * b.v[i];
  return r;
}
inline v8f operator+(const v8f& a, const v8f& b) {
  v8f r;
  for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] + b.v[i];
  return r;
}
inline v8f operator/(const v8f& a, const v8f& b) {
  v8f r;
  for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] / b.v[i];
  return r;
}
inline v8f operator*(float s, const v8f& a) {
  v8f r;
  for (int i = 0; i < 8; ++i) r.v[i] = s * a.v[i];
  return r;
}
inline v8f operator/(const v8f& a, float s) {
  v8f r;
  for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] / s;
  return r;
}
inline v8f vzero() { return v8f{{0, 0, 0, 0, 0, 0, 0, 0}}; }
inline v8f vload(const float* p) {
  v8f r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
inline void vstore(float* p, const v8f& x) { std::memcpy(p, x.v, sizeof(x.v)); }
inline v8f vmax_update(const v8f& m, const v8f& x) {
  v8f r;
  for (int i = 0; i < 8; ++i) r.v[i] = x.v[i] > m.v[i] ? x.v[i] : m.v[i];
  return r;
}
inline float vlane(const v8f& x, int i) { return x.v[i]; }
template <int N>
inline void add_small(float* o, const float* a, const float* b) {
  for (int i = 0; i < N; ++i) o[i] = a[i] + b[i];
}

#endif

}  // namespace plaidx::cpu
