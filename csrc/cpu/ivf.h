// ivf.h: inverted file construction: for every centroid cell, the documents that have a token in it.
//
// Buffers: codes u16 or u32 (n,) (Code: uint16_t or uint32_t), doc_offsets i64 (ndocs + 1,), cell_counts i64 (nlist + 1,) [out],
//   ivf i32 (npairs,) [out].
// Two calls: ivf_offsets() fills ivf_offsets (nlist + 1,) and returns npairs, the caller allocates
//   ivf (npairs,), then fill_ivf() writes it (given what ivf_offsets counted, it skips counting again; that
//   IvfParts is consumed). Lists are ascending and distinct.
// Preconditions: doc_offsets valid (checked), every code < nlist (checked), ndocs < 2**31 (checked).
// Errors: std::invalid_argument. Thread-safety: pure functions. Parallel over parts of the documents (of the
// cells for doc_cells) of at least 2^20 tokens (pairs) each, up to num_threads (0: the OpenMP default); the
// output does not depend on it. O(n + parts x nlist) time, O(parts x nlist) (doc_cells: parts x ndocs) scratch.
// Every function is instantiated for Code = uint16_t and uint32_t.
#pragma once

#include <cstdint>
#include <vector>

namespace plaidx::cpu {

// What ivf_offsets counted, part by part, for the fill_ivf of the same codes to reuse instead of counting again:
// parts (nparts + 1,) document boundaries, counts (nparts x nlist) each part's documents per cell.
struct IvfParts {
  std::vector<int64_t> parts, counts;
};

template <class Code>
int64_t ivf_offsets(const Code* codes, int64_t n, const int64_t* doc_offsets, int64_t ndocs,
                    int64_t nlist, int64_t* ivf_offsets, int num_threads = 0, IvfParts* keep = nullptr);

template <class Code>
void fill_ivf(const Code* codes, const int64_t* doc_offsets, int64_t ndocs, int64_t nlist,
              const int64_t* ivf_offsets, int32_t* ivf, int num_threads = 0, IvfParts* counted = nullptr);

// The inverted file transposed: cells[cell_offsets[i]:cell_offsets[i+1]] are the distinct cells of
// document i, ascending (a counting sort, O(npairs + nlist + ndocs)). The centroid interaction reads
// these instead of every token's code: a maximum over a document's tokens equals the maximum over its
// distinct cells. ivf (npairs,) and ivf_offsets (nlist + 1,) as fill_ivf writes them (offsets checked,
// entries checked to be in [0, ndocs)); cell_offsets (ndocs + 1,) and cells (npairs,) are written.
// nlist must fit Code (at most 65536 for uint16_t).
template <class Code>
void doc_cells(const int32_t* ivf, int64_t npairs, const int64_t* ivf_offsets, int64_t nlist, int64_t ndocs,
               int64_t* cell_offsets, Code* cells, int num_threads = 0);

}  // namespace plaidx::cpu
