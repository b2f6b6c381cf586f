// centroid_scores.h: query-token x centroid scores, the S input of search (a small single-pass GEMM).
//
// S[q, a, c] = sum_{j < d} Q[q, a, j] * Ct[j, c], summed sequentially over j = 0..d-1 (the avx2 and
// avx512 copies fuse each multiply-add), so every score is one fixed sequence of operations whatever
// the blocking or thread count.
//
// Buffers (C-contiguous, caller-owned): Q f32 (nq, qlen, d), Ct f32 (d, nlist) the centroids
// transposed, S f32 (nq, qlen, nlist).
// Blocking: cells in blocks of 64 columns; a block of Ct is copied once into a contiguous panel
// (d, 64) (zero-padded past nlist), which stays in L1/L2 while every query token of the tile is scored
// against it with register-blocked tiles. Work is cut into (cell block, query) tiles.
// Parallelism: over tiles with a static schedule, only when nq * qlen * nlist * d is large (more than
// about 50M multiply-adds); a single query of 32 tokens against 8192 cells of d = 128 stays serial.
// Preconditions: d > 0, qlen >= 0, nlist >= 0, nq >= 0 (the bindings enforce the module's conventions).
// Thread-safety: a pure function writing only S; results do not depend on num_threads.
#pragma once

#include <cstdint>

namespace plaidx::cpu {

// S[q, a, c] = <Q[q, a, :], Ct[:, c]>. num_threads: 0 means the OpenMP default.
// (Named query_centroid_scores so as not to clash with search.cpp's internal centroid_scores.)
void query_centroid_scores(const float* Q, int64_t nq, int64_t qlen, int64_t d, const float* Ct,
                           int64_t nlist, float* S, int num_threads);

}  // namespace plaidx::cpu
