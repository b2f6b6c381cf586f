// maxsim.cpp: exact MaxSim kernels (see maxsim.h).
#include "cpu/maxsim.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/dots.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"
#include "cpu/token.h"
#include "cpu/validate.h"

namespace plaidx::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kValuesBlock = 256;  // tokens of a float document scored per pass over the queries
constexpr int64_t kDecodeBlock = 16;   // compressed tokens decoded per pass

// Documents [begin, end) against every query; run_max: scratch (nq, qp).
template <Isa I>
PLAIDX_INLINE void maxsim_docs_impl(const float* Qt, int64_t nq, int64_t qlen, int64_t d, const float* values,
                                    const int64_t* doc_offsets, int64_t ndocs, int64_t begin, int64_t end,
                                    float* run_max, float* out) {
  const int64_t qp = padded_qlen(qlen);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t lo = doc_offsets[i], hi = doc_offsets[i + 1];
    std::fill(run_max, run_max + nq * qp, kNegInf);
    for (int64_t t = lo; t < hi; t += kValuesBlock) {
      const int64_t nt = std::min(kValuesBlock, hi - t);
      for (int64_t q = 0; q < nq; ++q)
        max_dots<WideVec<I>>(Qt + q * d * qp, d, qp, values + t * d, nt, run_max + q * qp);
    }
    for (int64_t q = 0; q < nq; ++q) out[q * ndocs + i] = hi > lo ? sum_first(run_max + q * qp, qlen) : 0.0f;
  }
}
PLAIDX_DISPATCH(void, maxsim_docs,
                (const float* Qt, int64_t nq, int64_t qlen, int64_t d, const float* values,
                 const int64_t* doc_offsets, int64_t ndocs, int64_t begin, int64_t end, float* run_max,
                 float* out),
                (Qt, nq, qlen, d, values, doc_offsets, ndocs, begin, end, run_max, out))

// Tokens [t, t + nt) of col decoded (not normalised) into buf (nt, d); false on a code >= nlist.
template <Isa I, class Code>
PLAIDX_INLINE bool decode_plain_impl(const Compressed<Code>& col, int64_t t, int64_t nt, float* buf) {
  const int64_t d = col.d, pb = d * col.nbits / 8;
#if PLAIDX_HAVE_DECODE2_AVX512
  if constexpr (I == Isa::kAvx512) {
    if (col.nbits == 2 && have_decode2_avx512())  // (col.table is nullptr only where this holds, bindings.cpp)
      return decode2_avx512(col.codes + t, col.packed + t * pb, nt, col.centroids, col.nlist, col.planes, col.table,
                            col.levels, d, buf);
  }
#endif
  return decode_rows_any(col.nbits, col.codes + t, col.packed + t * pb, nt, col.centroids, col.nlist, col.table, d,
                         buf, col.levels);
}
PLAIDX_DISPATCH_CODE(bool, decode_plain, (const Compressed<Code>& col, int64_t t, int64_t nt, float* buf),
                     (col, t, nt, buf))

// The same, normalised.
template <Isa I, class Code>
PLAIDX_INLINE bool decode_normalize(const Compressed<Code>& col, int64_t t, int64_t nt, float* buf) {
  if (!decode_plain_impl<I>(col, t, nt, buf)) return false;
  normalize_rows(buf, nt, col.d);
  return true;
}

template <Isa I, class Code>
PLAIDX_INLINE bool exact_docs_impl(const float* Qt, int64_t qlen, const Compressed<Code>& col, const int64_t* docs,
                                   int64_t count, float* buf, float* run_max, float* out) {
  const int64_t d = col.d, qp = padded_qlen(qlen);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t lo = col.doc_offsets[docs[i]], hi = col.doc_offsets[docs[i] + 1];
    std::fill(run_max, run_max + qp, kNegInf);
    for (int64_t t = lo; t < hi; t += kDecodeBlock) {
      const int64_t nt = std::min(kDecodeBlock, hi - t);
      prefetch_next_block(col, t + nt, hi, i + 1 < count ? docs[i + 1] : -1, kDecodeBlock);
      if (!decode_normalize<I>(col, t, nt, buf)) return false;
      max_dots<WideVec<I>>(Qt, d, qp, buf, nt, run_max);
    }
    out[i] = hi > lo ? sum_first(run_max, qlen) : 0.0f;
  }
  return true;
}
PLAIDX_DISPATCH_CODE(bool, exact_docs,
                (const float* Qt, int64_t qlen, const Compressed<Code>& col, const int64_t* docs, int64_t count,
                 float* buf, float* run_max, float* out),
                (Qt, qlen, col, docs, count, buf, run_max, out))

}  // namespace

void transpose_queries(const float* Q, int64_t nq, int64_t qlen, int64_t d, float* Qt) {
  const int64_t qp = padded_qlen(qlen);
  for (int64_t q = 0; q < nq; ++q) {
    float* dst = Qt + q * d * qp;
    const float* src = Q + q * qlen * d;
    for (int64_t j = 0; j < d; ++j)
      for (int64_t a = 0; a < qp; ++a) dst[j * qp + a] = a < qlen ? src[a * d + j] : 0.0f;
  }
}

void maxsim(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* values, int64_t n,
            const int64_t* doc_offsets, int64_t ndocs, float* out, int num_threads) {
  if (d <= 0 || d % 8 != 0) throw std::invalid_argument("d must be a positive multiple of 8");
  if (qlen < 1) throw std::invalid_argument("queries need at least one token");
  check_offsets(doc_offsets, ndocs, n, "doc_offsets");
  const int threads = resolve_threads(num_threads);
  const int64_t qp = padded_qlen(qlen);
  std::vector<float> Qt(static_cast<size_t>(nq * d * qp));
  transpose_queries(Q, nq, qlen, d, Qt.data());
  // Chunks of documents; each chunk scores all queries so a document is read once.
  const int64_t grain = std::max<int64_t>(1, grain_for(ndocs, threads, 8));
  parallel_chunks(ndocs, grain, threads, [&](int64_t begin, int64_t end) {
    std::vector<float> run_max(static_cast<size_t>(nq * qp));
    maxsim_docs(Qt.data(), nq, qlen, d, values, doc_offsets, ndocs, begin, end, run_max.data(), out);
  });
}

template <class Code>
void exact_scores(const float* Qt, int64_t qlen, const Compressed<Code>& col, const int64_t* docs, int64_t count,
                  float* out) {
  std::vector<float> buf(static_cast<size_t>(kDecodeBlock * col.d));
  std::vector<float> run_max(static_cast<size_t>(padded_qlen(qlen)));
  if (!exact_docs(Qt, qlen, col, docs, count, buf.data(), run_max.data(), out))
    throw std::invalid_argument("codes: a centroid id is >= nlist (" + std::to_string(col.nlist) + ")");
}

template <class Code>
void decode_tokens(const Compressed<Code>& col, int64_t t, int64_t nt, float* buf) {
  if (!decode_plain(col, t, nt, buf))
    throw std::invalid_argument("codes: a centroid id is >= nlist (" + std::to_string(col.nlist) + ")");
}

template void decode_tokens<uint16_t>(const Compressed<uint16_t>&, int64_t, int64_t, float*);
template void decode_tokens<uint32_t>(const Compressed<uint32_t>&, int64_t, int64_t, float*);
template void exact_scores<uint16_t>(const float*, int64_t, const Compressed<uint16_t>&, const int64_t*, int64_t,
                                     float*);
template void exact_scores<uint32_t>(const float*, int64_t, const Compressed<uint32_t>&, const int64_t*, int64_t,
                                     float*);

}  // namespace plaidx::cpu
