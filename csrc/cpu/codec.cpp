// codec.cpp: residual compression and decompression kernels (see codec.h).
#include "cpu/codec.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cpu/parallel.h"
#include "cpu/simd.h"
#include "cpu/token.h"

namespace plaidx::cpu {
namespace {

// Number of entries of the ascending row cut (nc entries) that are <= r; 0 for a NaN r.
template <int NBITS>
PLAIDX_INLINE uint32_t bucket_of(const float* cut, float r) {
  constexpr int nc = (1 << NBITS) - 1;
  if constexpr (NBITS <= 4) {
    uint32_t count = 0;
    for (int k = 0; k < nc; ++k) count += cut[k] <= r ? 1u : 0u;
    return count;
  } else {
    // Branch-light upper bound; equal to the count above because the row is sorted (checked).
    int64_t lo = 0, len = nc;
    while (len > 0) {
      const int64_t half = len / 2;
      if (cut[lo + half] <= r) {
        lo += half + 1;
        len -= half + 1;
      } else {
        len = half;
      }
    }
    return static_cast<uint32_t>(lo);
  }
}

template <int NBITS>
PLAIDX_INLINE void compress_rows_t(const float* residuals, int64_t begin, int64_t end, int64_t d,
                                   const float* cutoffs, uint8_t* packed) {
  constexpr int dpb = 8 / NBITS;
  constexpr int nc = (1 << NBITS) - 1;
  const int64_t pb = d / dpb;
  for (int64_t t = begin; t < end; ++t) {
    const float* r = residuals + t * d;
    uint8_t* out = packed + t * pb;
    for (int64_t p = 0; p < pb; ++p) {
      uint32_t byte = 0;
      for (int u = 0; u < dpb; ++u) {
        const int64_t j = p * dpb + u;
        byte |= bucket_of<NBITS>(cutoffs + j * nc, r[j]) << (u * NBITS);
      }
      out[p] = static_cast<uint8_t>(byte);
    }
  }
}

template <Isa I>
PLAIDX_INLINE void compress_rows_impl(const float* residuals, int64_t begin, int64_t end, int64_t d,
                                      const float* cutoffs, int nbits, uint8_t* packed) {
  switch (nbits) {
    case 1: compress_rows_t<1>(residuals, begin, end, d, cutoffs, packed); break;
    case 2: compress_rows_t<2>(residuals, begin, end, d, cutoffs, packed); break;
    case 4: compress_rows_t<4>(residuals, begin, end, d, cutoffs, packed); break;
    default: compress_rows_t<8>(residuals, begin, end, d, cutoffs, packed); break;
  }
}
PLAIDX_DISPATCH(void, compress_rows,
                (const float* residuals, int64_t begin, int64_t end, int64_t d, const float* cutoffs,
                 int nbits, uint8_t* packed),
                (residuals, begin, end, d, cutoffs, nbits, packed))

// pq_encode's rows [begin, end). tt (pb, dpb, 256): the table transposed, codeword k's coordinate u of byte p at
// tt[(p * dpb + u) * 256 + k]; mids (15,): the levels' midpoints. Each of the L lanes keeps the best of the
// codewords k = lane (mod L) (strict <, so the lowest index among equals), then the lanes are merged.
template <Isa I>
PLAIDX_INLINE void pq_encode_rows_impl(const float* residuals, int64_t begin, int64_t end, int64_t d, int dpb,
                                       const float* tt, const double* mids, uint8_t* packed) {
  using V = WideVec<I>;
  using IV = decltype(V{} > V{});
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(float));
  const int64_t pb = d / dpb;
  IV iota;
  for (int l = 0; l < L; ++l) iota[l] = l;
  for (int64_t t = begin; t < end; ++t) {
    const float* r = residuals + t * d;
    uint8_t* out = packed + t * pb;
    double num = 0.0, den = 0.0;
    for (int64_t p = 0; p < pb; ++p) {
      const int K = p + 1 < pb ? 256 : 16;
      const float* tp = tt + p * dpb * 256;
      const float* rp = r + p * dpb;
      V best = V{} + __builtin_inff();
      IV bidx = iota - iota, kv = iota;
      for (int k = 0; k < K; k += L) {
        V acc = V{};
        for (int u = 0; u < dpb; ++u) {
          const V e = rp[u] - vload_as<V>(tp + u * 256 + k);
          acc += e * e;
        }
        const IV lt = acc < best;
        best = (V)(((IV)acc & lt) | ((IV)best & ~lt));
        bidx = (bidx & ~lt) | (kv & lt);
        kv += L;
      }
      float m = best[0];
      int bi = static_cast<int>(bidx[0]);
      for (int l = 1; l < L; ++l)
        if (best[l] < m || (best[l] == m && bidx[l] < bi)) m = best[l], bi = static_cast<int>(bidx[l]);
      out[p] = static_cast<uint8_t>(bi);
      for (int u = 0; u < dpb; ++u) {
        const double c = tp[u * 256 + bi];
        num += static_cast<double>(rp[u]) * c;
        den += c * c;
      }
    }
    const double s = den > 0.0 ? num / den : 1.0;
    int level = 0;
    for (int i = 0; i < 15; ++i) level += mids[i] < s ? 1 : 0;
    out[pb - 1] = static_cast<uint8_t>(out[pb - 1] | (level << 4));
  }
}
PLAIDX_DISPATCH(void, pq_encode_rows,
                (const float* residuals, int64_t begin, int64_t end, int64_t d, int dpb, const float* tt,
                 const double* mids, uint8_t* packed),
                (residuals, begin, end, d, dpb, tt, mids, packed))

template <Isa I, class Code>
PLAIDX_INLINE bool decompress_rows_impl(const Code* codes, const uint8_t* packed, int64_t begin,
                                        int64_t end, const float* centroids, int64_t nlist, int64_t d,
                                        const float* table, int nbits, bool unit, float* out,
                                        const float* levels) {
  const int64_t pb = d * nbits / 8;
  if (!decode_rows_any(nbits, codes + begin, packed + begin * pb, end - begin, centroids, nlist, table, d,
                       out + begin * d, levels))
    return false;
  if (unit) normalize_rows(out + begin * d, end - begin, d);
  return true;
}
PLAIDX_DISPATCH_CODE(bool, decompress_rows,
                (const Code* codes, const uint8_t* packed, int64_t begin, int64_t end,
                 const float* centroids, int64_t nlist, int64_t d, const float* table, int nbits,
                 bool unit, float* out, const float* levels),
                (codes, packed, begin, end, centroids, nlist, d, table, nbits, unit, out, levels))

void check_codec_args(int64_t d, int nbits) {
  if (nbits != 1 && nbits != 2 && nbits != 4 && nbits != 8)
    throw std::invalid_argument("nbits must be 1, 2, 4 or 8, got " + std::to_string(nbits));
  if (d <= 0 || d % 8 != 0)
    throw std::invalid_argument("d must be a positive multiple of 8, got " + std::to_string(d));
}

}  // namespace

const float* build_decode_table(const float* weights, int64_t d, int nbits, std::vector<float>& storage) {
  check_codec_args(d, nbits);
  if (nbits == 8) return weights;
  const int dpb = 8 / nbits;
  const int64_t nb = int64_t{1} << nbits;
  const int64_t pb = d / dpb;
  const uint32_t mask = static_cast<uint32_t>(nb - 1);
  storage.assign(static_cast<size_t>(pb * 256 * dpb), 0.0f);
  for (int64_t p = 0; p < pb; ++p)
    for (uint32_t b = 0; b < 256; ++b)
      for (int u = 0; u < dpb; ++u) {
        const int64_t j = p * dpb + u;
        const uint32_t code = (b >> (u * nbits)) & mask;
        storage[static_cast<size_t>((p * 256 + b) * dpb + u)] = weights[j * nb + code];
      }
  return storage.data();
}

const float* build_weight_planes(const float* weights, int64_t d, int nbits, std::vector<float>& storage) {
  check_codec_args(d, nbits);
  const int64_t nb = int64_t{1} << nbits;
  storage.resize(static_cast<size_t>(nb * d));
  for (int64_t j = 0; j < d; ++j)
    for (int64_t b = 0; b < nb; ++b) storage[static_cast<size_t>(b * d + j)] = weights[j * nb + b];
  return storage.data();
}

void compress(const float* residuals, int64_t n, int64_t d, const float* cutoffs, int nbits, uint8_t* packed,
              int num_threads) {
  check_codec_args(d, nbits);
  const int64_t nc = (int64_t{1} << nbits) - 1;
  for (int64_t j = 0; j < d; ++j)
    for (int64_t c = 0; c + 1 < nc; ++c)
      if (!(cutoffs[j * nc + c] <= cutoffs[j * nc + c + 1]))
        throw std::invalid_argument("cutoffs must be ascending (and not NaN) along each row; row " +
                                    std::to_string(j) + " is not");
  const int threads = resolve_threads(num_threads);
  const int64_t grain = std::max<int64_t>(256, grain_for(n, threads, 4));
  parallel_chunks(n, grain, threads, [&](int64_t begin, int64_t end) {
    compress_rows(residuals, begin, end, d, cutoffs, nbits, packed);
  });
}

void pq_encode(const float* residuals, int64_t n, int64_t d, int nbits, const float* table, const float* levels,
               uint8_t* packed, int num_threads) {
  check_codec_args(d, nbits);
  if (nbits == 8) throw std::invalid_argument("pq_encode: nbits must be 1, 2 or 4 (a byte codes 8 / nbits dimensions)");
  const int dpb = 8 / nbits;
  const int64_t pb = d / dpb;
  std::vector<float> tt(static_cast<size_t>(pb * dpb * 256));
  for (int64_t p = 0; p < pb; ++p)
    for (int k = 0; k < 256; ++k)
      for (int u = 0; u < dpb; ++u) tt[static_cast<size_t>((p * dpb + u) * 256 + k)] = table[(p * 256 + k) * dpb + u];
  double mids[15];
  for (int i = 0; i < 15; ++i) mids[i] = 0.5 * (static_cast<double>(levels[i]) + static_cast<double>(levels[i + 1]));
  const int threads = resolve_threads(num_threads);
  const int64_t grain = std::max<int64_t>(256, grain_for(n, threads, 4));
  parallel_chunks(n, grain, threads, [&](int64_t begin, int64_t end) {
    pq_encode_rows(residuals, begin, end, d, dpb, tt.data(), mids, packed);
  });
}

template <class Code>
void decompress(const Code* codes, const uint8_t* packed, int64_t n, const float* centroids,
                int64_t nlist, int64_t d, const float* weights, int nbits, bool normalize_rows, float* out,
                int num_threads, const float* pq_table, const float* levels) {
  check_codec_args(d, nbits);
  std::vector<float> storage;
  const float* table = pq_table != nullptr ? pq_table : build_decode_table(weights, d, nbits, storage);
  const int threads = resolve_threads(num_threads);
  const int64_t grain = std::max<int64_t>(256, grain_for(n, threads, 4));
  parallel_chunks(n, grain, threads, [&](int64_t begin, int64_t end) {
    if (!decompress_rows(codes, packed, begin, end, centroids, nlist, d, table, nbits, normalize_rows, out, levels))
      throw std::invalid_argument("codes: a centroid id is >= nlist (" + std::to_string(nlist) + ")");
  });
}

template void decompress<uint16_t>(const uint16_t*, const uint8_t*, int64_t, const float*, int64_t, int64_t,
                                   const float*, int, bool, float*, int, const float*, const float*);
template void decompress<uint32_t>(const uint32_t*, const uint8_t*, int64_t, const float*, int64_t, int64_t,
                                   const float*, int, bool, float*, int, const float*, const float*);

}  // namespace plaidx::cpu
