// simd.h: portable 8-lane float vector and the runtime SIMD dispatch macros of the CPU kernels.
//
// v8f is a GCC/clang vector extension (one AVX register in the avx2 copy of a worker, two SSE
// registers in the baseline copy) or, on other compilers, a plain struct with the same operations;
// v16f (GCC/clang) is used by the avx512 copy. Operations are element-wise and never reassociated
// (no -ffast-math), so a value is computed by one fixed sequence of operations in a given copy:
// results do not depend on the thread count or on blocking. The avx2 and avx512 copies let the
// compiler fuse multiply-adds (FMA), so they may differ from the baseline copy in the last bits.
//
// Runtime dispatch: a hot worker is written once as an inline template `name_impl<Isa>`;
// PLAIDX_DISPATCH (PLAIDX_DISPATCH_CODE for one templated on the code type) then defines `name`,
// which calls a copy compiled with __attribute__((target("avx512f,avx2,fma"))) or target("avx2,fma")
// when the CPU (and OS) support it, else a baseline copy (GCC/clang on x86-64; elsewhere, or with
// -march=native, the one compiled ISA). Parallel regions never live in the dispatched workers: drivers
// call them from inside the region. (GCC's target_clones is not used: it lowers 8-lane broadcasts for
// the baseline before cloning, which leaves the avx2 clone with slow lane inserts.)
//
// Thread-safety: header-only pure helpers, no state except the cached CPU feature flag.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__)
#define PLAIDX_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define PLAIDX_INLINE __forceinline
#else
#define PLAIDX_INLINE inline
#endif

namespace plaidx::cpu {
// Instruction sets a worker can be compiled for.
enum class Isa { kBase, kAvx2, kAvx512 };
}  // namespace plaidx::cpu

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX2__) && !defined(PLAIDX_NO_DISPATCH)
#define PLAIDX_HAVE_DISPATCH 1
namespace plaidx::cpu {
// The best copy this CPU (and OS) runs, checked once; the environment variable PLAIDX_SIMD=baseline
// or avx2 caps it (for testing the other copies; read at the first kernel call).
inline Isa runtime_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    Isa best = Isa::kBase;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
      best = Isa::kAvx512;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      best = Isa::kAvx2;
    }
    const char* cap = std::getenv("PLAIDX_SIMD");
    if (cap != nullptr && std::strcmp(cap, "baseline") == 0) return Isa::kBase;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Isa::kAvx512) {
      return __builtin_cpu_supports("fma") ? Isa::kAvx2 : Isa::kBase;
    }
    return best;
  }();
  return isa;
}
}  // namespace plaidx::cpu
#define PLAIDX_DISPATCH_T(head, ret, name, params, args)                                  \
  head __attribute__((target("avx512f,avx2,fma"))) ret name##_avx512 params {            \
    return name##_impl<::plaidx::cpu::Isa::kAvx512> args;                               \
  }                                                                                     \
  head __attribute__((target("avx2,fma"))) ret name##_avx2 params {                      \
    return name##_impl<::plaidx::cpu::Isa::kAvx2> args;                                 \
  }                                                                                     \
  head ret name##_base params { return name##_impl<::plaidx::cpu::Isa::kBase> args; }    \
  head ret name params {                                                                \
    switch (::plaidx::cpu::runtime_isa()) {                                             \
      case ::plaidx::cpu::Isa::kAvx512: return name##_avx512 args;                      \
      case ::plaidx::cpu::Isa::kAvx2: return name##_avx2 args;                          \
      default: return name##_base args;                                                 \
    }                                                                                   \
  }
#else
#define PLAIDX_HAVE_DISPATCH 0
namespace plaidx::cpu {
#if defined(__GNUC__) && defined(__AVX512F__)
constexpr Isa kCompiledIsa = Isa::kAvx512;
#elif defined(__AVX2__)
constexpr Isa kCompiledIsa = Isa::kAvx2;
#else
constexpr Isa kCompiledIsa = Isa::kBase;
#endif
inline Isa runtime_isa() { return kCompiledIsa; }
}  // namespace plaidx::cpu
#define PLAIDX_DISPATCH_T(head, ret, name, params, args) \
  head ret name params { return name##_impl<::plaidx::cpu::kCompiledIsa> args; }
#endif
#define PLAIDX_DISPATCH(ret, name, params, args) PLAIDX_DISPATCH_T(, ret, name, params, args)
// PLAIDX_DISPATCH_CODE: the same for a worker templated on the integer type of its centroid ids
// (`Code`: uint16_t or uint32_t, deduced from the arguments), so one body serves both code widths.
#define PLAIDX_DISPATCH_CODE(ret, name, params, args) \
  PLAIDX_DISPATCH_T(template <class Code>, ret, name, params, args)

namespace plaidx::cpu {

// An IEEE binary16 value as float32 (exact).
PLAIDX_INLINE float half_to_float(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float32
    const float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, sizeof(bits));
    bits |= sign;
  } else if (exp == 31) {  // infinity or NaN
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

#if defined(__GNUC__)

// The helpers below are always inlined, so the by-value vector ABI note (-Wpsabi) does not apply.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
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

// Lane-generic forms for the kernels templated on the vector type (the copy's native width).
template <class V>
PLAIDX_INLINE V vload_as(const float* p) {
  V r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
template <class V>
PLAIDX_INLINE void vstore_as(float* p, V x) {
  std::memcpy(p, &x, sizeof(x));
}
template <class V>
PLAIDX_INLINE V vmax_as(V m, V x) {
  const auto gt = x > m;
  using I = decltype(gt);
  return (V)(((I)x & gt) | ((I)m & ~gt));
}
// The vector type the copy compiled for `I` uses in its dot-product kernels: one native register.
template <Isa I>
using WideVec = typename std::conditional<I == Isa::kAvx512, v16f,
                                          typename std::conditional<I == Isa::kAvx2, v8f, v4f>::type>::type;

// o[0:N] = a[0:N] + b[0:N] for N in {1, 2, 4, 8}, as one vector addition.
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

// o[0:N] = a[0:N] + s * b[0:N] for N in {1, 2, 4, 8}. The product is exact for the codecs that use it (both
// factors carry at most 12 significant bits, codec.py), so whether the compiler fuses it into one
// multiply-add does not change the result.
template <int N>
PLAIDX_INLINE void add_scaled(float* o, const float* a, const float* b, float s) {
  if constexpr (N == 8) {
    vstore(o, vload(a) + s * vload(b));
  } else if constexpr (N == 4 || N == 2) {
    using V = typename std::conditional<N == 4, v4f, v2f>::type;
    V x, y;
    std::memcpy(&x, a, sizeof(V));
    std::memcpy(&y, b, sizeof(V));
    x += s * y;
    std::memcpy(o, &x, sizeof(V));
  } else {
    for (int i = 0; i < N; ++i) o[i] = a[i] + s * b[i];
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
template <int N>
inline void add_scaled(float* o, const float* a, const float* b, float s) {
  for (int i = 0; i < N; ++i) o[i] = a[i] + s * b[i];
}
template <class V>
inline V vload_as(const float* p) {
  return vload(p);
}
template <class V>
inline void vstore_as(float* p, const V& x) {
  vstore(p, x);
}
template <class V>
inline V vmax_as(const V& m, const V& x) {
  return vmax_update(m, x);
}
template <Isa I>
using WideVec = v8f;

#endif

}  // namespace plaidx::cpu
