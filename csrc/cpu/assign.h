// assign.h: the nearest centroid (max inner product) of each token, searched group by group.
//
// The centroids are split into G groups (the build clusters them; any split is valid). A token's
// coarse scores against the G group centres pick its `nprobe` best groups (ties: the lower group);
// its code is the best-scoring centroid of those groups (ties: the lower centroid id). With one group
// holding every centroid this is the exact nearest centroid. Each score is one fixed sequence of
// operations (summed over j = 0..d-1; the avx2 and avx512 copies fuse each multiply-add), so results
// do not depend on blocking or thread count.
//
// Buffers (C-contiguous, caller-owned):
//   X f32 (n, d) tokens; coarse_t f32 (d, gp) the group centres transposed, gp >= G a multiple of 8
//   (columns past G are ignored); panels f32 (d * P,) the centroids transposed, group by group: group g
//   owns columns [pcol[g], pcol[g + 1]) (every pcol[g] a multiple of 8, P = pcol[G]) stored as its own
//   contiguous (d, pcol[g + 1] - pcol[g]) panel at panels + d * pcol[g] (a shared row stride of P floats
//   would put a group's rows in one cache set); ids u32 (P,) the centroid id of each column, 0xFFFFFFFF
//   on a padding column (never chosen); out u32 (n,).
// Preconditions: d > 0, 1 <= nprobe <= G, every group has at least one real column (the bindings
// check the layout). Thread-safety: a pure function writing only out.
#pragma once

#include <cstdint>

namespace plaidx::cpu {

constexpr uint32_t kNoCentroid = 0xFFFFFFFFu;

void assign_nearest(const float* X, int64_t n, int64_t d, const float* coarse_t, int64_t G, int64_t gp,
                    const float* panels, int64_t P, const int64_t* pcol, const uint32_t* ids, int64_t nprobe,
                    uint32_t* out, int num_threads);

}  // namespace plaidx::cpu
