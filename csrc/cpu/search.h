// search.h: PLAID search (probe, candidate generation, centroid-score pruning, exact MaxSim re-rank)
// and exhaustive exact search over a compressed collection.
//
// Buffers (C-contiguous, caller-owned):
//   Q f32 (nq, qlen, d), S f32 (nq, qlen, nlist) centroid scores of the query tokens, or nullptr: then
//   each query's scores are computed inside from col.centroids, straight in the transposed layout the
//   search uses (the same values as query_centroid_scores, bit for bit, without S's memory or the
//   transposition),
//   col: see maxsim.h (Compressed<Code>, Code = uint16_t or uint32_t), ivf i32 (npairs,), ivf_offsets i64 (nlist + 1,),
//   allowed u8 (ndocs,) or nullptr for every document,
//   out_scores f32 (nq, k), out_docs i64 (nq, k): best first, padded with -inf / -1.
// Semantics: exactly the contract of plaidx/_kernels.py (steps 1-5, ordering by score descending then
// document ascending, NaN ranking as -inf).
// Preconditions: d a positive multiple of 8, qlen >= 1, nbits in {1, 2, 4, 8}, nprobe, ndocs, n_exact,
// k >= 1. doc_offsets and ivf_offsets are checked in full; codes and ivf entries are checked where
// they are read. Violations throw std::invalid_argument.
// Parallelism: across queries when nq >= threads, otherwise across cells / candidates inside each
// query (a stage with little work stays on one thread). Every score is computed by one fixed sequence
// of operations and every selection uses a strict total order, so results are bit-identical for any
// num_threads (0: the OpenMP default). Scratch per thread: nlist * qp floats, ndocs bytes, and
// O(candidates) for the candidate lists.
// Thread-safety: pure functions; they only write out_scores and out_docs.
#pragma once

#include <cstdint>
#include <limits>

#include "cpu/maxsim.h"

namespace plaidx::cpu {

template <class Code>
struct IvfView {
  const int32_t* ivf;  // (npairs,)
  int64_t npairs;
  const int64_t* ivf_offsets;  // (nlist + 1,)
  // Optional (nullptr): each document's distinct cells (ivf.h: doc_cells), read by the centroid
  // interaction instead of every token's code. cell_offsets[0] == 0 and cell_offsets[ndocs] == ncells
  // are the caller's to check; the rest is checked where read. Same type as the collection's codes.
  const Code* cells = nullptr;
  const int64_t* cell_offsets = nullptr;
  int64_t ncells = 0;
};

struct SearchParams {
  int64_t nprobe;
  double threshold;  // cells scoring below it for every query token are pruned in step 3; -inf: none is
  int64_t ndocs;     // candidates kept after the pruned centroid scores
  int64_t n_exact;  // candidates kept after the full centroid scores, scored exactly
  int64_t k;
  // Step 5 over the decompressed tokens in int8 (quantize.h: quantize_unit_rows) against the quantised query:
  //   sum_a max_t (float(<q[t], qa[a]>) * scale[t]) * sa[a],
  // the kept int8 rule applied to the decoded unit vectors (same finiteness and d conditions). Not with kept.
  bool exact_int8 = false;
  // Step 2 skips a probed cell whose list holds more than max_list documents (a hub: a token every document has,
  // such as [CLS]): its documents become candidates only through other probed cells. 0: no limit.
  int64_t max_list = 0;
};

// Whether a search with this threshold prunes cells in step 3 (every cell is kept at -inf).
inline bool prunes(double threshold) { return threshold > -std::numeric_limits<double>::infinity(); }

// Rows quantised as quantize.h says: q (n, d) int8, scale (n,) and, where a kernel needs them, sums (n,)
// (sum_j q[i, j]); q == nullptr: none given.
struct Int8Rows {
  const int8_t* q = nullptr;
  const float* scale = nullptr;
  const int32_t* sums = nullptr;
};

// Every token's kept vector (col.n rows), the rerank tier's: int8 rows with scales (sums not needed), or
// float16 rows (half: IEEE binary16 bits), or neither.
struct KeptRows {
  Int8Rows int8;
  const uint16_t* half = nullptr;
};

// Steps 1-2's candidates given by the caller: docs (n,) distinct documents in [0, ndocs), ascending, of which
// the allowed ones are the candidates (no cell is probed; nprobe is not read). docs == nullptr: none given.
struct Candidates {
  const int64_t* docs = nullptr;
  int64_t n = 0;
};

// Both are instantiated for Code = uint16_t and uint32_t.
// cell_codes: the centroids (nlist rows, with sums), or none: with S == nullptr, the cell scores are the
// quantised ones of quantize.h (the query tokens quantised per call; they must be finite and
// d <= kMaxQuantizedDim) instead of float dot products.
// kept: step 5 scores the n_exact candidates by MaxSim over their kept vectors instead of decompressing
// them. int8: against the quantised query tokens (same finiteness and d conditions),
//   sum_a max_t (float(<kept.q[t], qa[a]>) * kept.scale[t]) * sa[a];
// float16: the float MaxSim of the rows converted exactly (the values maxsim gives them).
// token_scales (n,) (float16 bits, token_scales of adc.h), or nullptr: step 5 scores the n_exact candidates by
// lookup tables over their codes and the cell scores (adc.h) instead of decompressing them. Needs col.table;
// not with exact_int8 or kept.
// token_scales_done (ndocs,), or nullptr: token_scales are derived on demand, each candidate's before step 5
// scores it (adc.h: fill_token_scales); the search then writes token_scales (the caller's, writable) and these
// flags.
template <class Code>
void search(const float* Q, const float* S, int64_t nq, int64_t qlen, const Compressed<Code>& col,
            const IvfView<Code>& ivf, const uint8_t* allowed, const SearchParams& params, float* out_scores,
            int64_t* out_docs, int num_threads, const Int8Rows& cell_codes = {}, const KeptRows& kept = {},
            const uint16_t* token_scales = nullptr, uint8_t* token_scales_done = nullptr,
            const Candidates& candidates = {});

// out (nq, m): the score step 5 of search gives document docs[i] with kept vectors, for each query of Q
// (nq, qlen, d). doc_offsets (ndocs + 1,) over the kept rows (n of them); exactly one of kept.int8 and
// kept.half given. Parallel over the documents; results do not depend on num_threads.
void kept_scores(const float* Q, int64_t nq, int64_t qlen, int64_t d, const int64_t* doc_offsets, int64_t ndocs,
                 int64_t n, const KeptRows& kept, const int64_t* docs, int64_t m, float* out, int num_threads);

// Whether the int8 kernels run as AVX-512 VNNI here (not capped by PLAIDX_SIMD): where they do not, the int8
// cell scores and exact stage run generic copies, slower than the float ones.
bool vnni_kernels();
// Whether the quantised cell scores run as AMX tile products here (for d % 64 == 0; PLAIDX_AMX=0 or a dispatch
// capped below AVX-512 turns it off): the same values as the VNNI kernel.
bool amx_kernels();

template <class Code>
void exact_search(const float* Q, int64_t nq, int64_t qlen, const Compressed<Code>& col, const uint8_t* allowed,
                  int64_t k, float* out_scores, int64_t* out_docs, int num_threads);

}  // namespace plaidx::cpu
