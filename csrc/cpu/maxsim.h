// maxsim.h: exact late-interaction (MaxSim) scoring of queries against float or compressed documents.
//
// score(q, i) = sum_{a < qlen} max_{t in doc i} <Q[q, a], v_t>, 0 for a document without tokens,
// with v_t the float row (maxsim) or the decompressed, normalized token (exact_scores).
//
// Buffers (C-contiguous, caller-owned): Q f32 (nq, qlen, d), Qt f32 (nq, d, qp) with
// qp = padded_qlen(qlen), values f32 (n, d), doc_offsets i64 (ndocs + 1,), out f32 (nq, ndocs).
// Preconditions: d a positive multiple of 8, qlen >= 1; doc_offsets valid (maxsim checks them).
// Thread-safety: pure functions writing only their outputs; results do not depend on num_threads.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/token.h"

namespace plaidx::cpu {

// A compressed collection as search sees it. table: build_decode_table(weights, d, nbits, ...), or the
// index's own product-quantiser table (codec "pq", token.h), with levels its per-token scales.
// planes: build_weight_planes(weights, d, nbits, ...), nullptr for a pq table. Code: the centroid ids' type, uint16_t (nlist up
// to 65536) or uint32_t; every function taking a Compressed<Code> is instantiated for both.
template <class Code>
struct Compressed {
  const Code* codes;  // (n,)
  const uint8_t* packed;  // (n, d * nbits / 8)
  int64_t n;
  const int64_t* doc_offsets;  // (ndocs + 1,), validated
  int64_t ndocs;
  const float* centroids;  // (nlist, d)
  int64_t nlist;
  int64_t d;
  int nbits;
  const float* table;   // nullptr only where decode2_avx512 runs (nbits 2, have_decode2_avx512())
  const float* planes;  // (2^nbits, d): the bucket weights transposed; nullptr with a pq table
  const float* levels = nullptr;  // (16,): the pq codec's per-token residual scales, or nullptr
};

inline int64_t padded_qlen(int64_t qlen) { return (qlen + 7) / 8 * 8; }

// Asks the cache for what the next block of a scan over decoded documents reads: tokens [t, t + block) of
// the current document (hi: its end) while it has some left, else the first block of document next_doc
// (-1: none), its centroid rows and residual bytes.
template <class Code>
inline void prefetch_next_block(const Compressed<Code>& col, int64_t t, int64_t hi, int64_t next_doc,
                                int64_t block) {
  if (t < hi) {
    prefetch_centroids(col.codes, t, std::min(t + block, hi), col.centroids, col.nlist, col.d);
  } else if (next_doc >= 0) {
    const int64_t lo2 = col.doc_offsets[next_doc], hi2 = col.doc_offsets[next_doc + 1];
    const int64_t pb = col.d * col.nbits / 8;
    prefetch_centroids(col.codes, lo2, std::min(lo2 + block, hi2), col.centroids, col.nlist, col.d);
    prefetch_bytes(col.packed + lo2 * pb, std::min(lo2 + block, hi2) - lo2, pb);
  }
}

// Qt[q, j, a] = Q[q, a, j] for a < qlen, 0 for qlen <= a < qp.
void transpose_queries(const float* Q, int64_t nq, int64_t qlen, int64_t d, float* Qt);

// out[q, i] = MaxSim of Q[q] against values[doc_offsets[i]:doc_offsets[i+1]].
void maxsim(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* values, int64_t n,
            const int64_t* doc_offsets, int64_t ndocs, float* out, int num_threads);

// out[i] = MaxSim of one transposed query Qt (d, qp) against the decompressed, normalized tokens of
// document docs[i], for i in [0, count). Serial; call it from a parallel loop over chunks of docs.
// Throws std::invalid_argument when a token's code is >= nlist.
template <class Code>
void exact_scores(const float* Qt, int64_t qlen, const Compressed<Code>& col, const int64_t* docs, int64_t count,
                  float* out);

// Tokens [t, t + nt) of col decoded (centroid plus bucket weights, not normalised) into buf (nt, d): the
// reference's values bit for bit. Throws std::invalid_argument when a code is >= nlist. Serial.
template <class Code>
void decode_tokens(const Compressed<Code>& col, int64_t t, int64_t nt, float* buf);

}  // namespace plaidx::cpu
