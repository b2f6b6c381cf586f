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

// Optional int8 copies of the same layout, which let avx512-vnni CPUs (have_vnni(), vnni.h) pick each
// token's candidates by int8 dot products (vpdpbusd: 64 byte products an instruction, 4x the float32
// multiply-adds'). Each token is quantised by quantize.h's rule (int8 values, one scale), and so is every
// group centre and column, except columns that are already small integers times a scale (an index's 4-bit
// centroids), which are stored exactly so. A token's approximate score of a column,
// (float(dot) * scale_c) * scale_x, then differs from its float32 score by a rounding error with standard
// deviation sqrt((|c|^2 s_x^2 + |x|^2 e_c^2) / 12) (e_c: the column's scale, 0 where exact). A margin of
// kMarginSigmas such deviations (taken at the group's largest |c| and e_c) plus the float32 sums' own rounding
// decides which columns are scored again in float32, by the same fused multiply-adds in the same order as
// the avx512 float32 kernel (assign.cpp: assign_chunk_int8): the probe list's groups near its nprobe-th
// score, and each token's columns that may still be its best. So the codes are the float32 kernel's unless
// a rounding error exceeds the margin (benchmarks/bench_assign.py --int8 measures the largest one seen).
// Needs d % 4 == 0, d <= kMaxQuantizedDim, gp and every pcol[g] multiples of 16 (the bindings check); a
// chunk of tokens holding a value that is not finite takes the float32 kernel.
//   coarse_q i8 (d / 4, gp, 4): the group centres' int8 values, 4 dimensions of a column together;
//   coarse_scale f32 (gp,), coarse_sum i32 (gp,) (the sum of a column's int8 values);
//   coarse_rows f32 (gp, d): the group centres row-major (coarse_t transposed);
//   panels_q i8 (d * P,): group g's columns as one (d / 4, width_g, 4) block at panels_q + d * pcol[g];
//   panel_scale f32 (P,), panel_sum i32 (P,); centroids f32 (nlist, d): column c is centroids[ids[c]];
//   group_bound f32 (G, 2): the largest |c|^2 and e_c^2 over each group's real columns.
struct AssignInt8 {
  const int8_t* coarse_q = nullptr;
  const float* coarse_scale = nullptr;
  const int32_t* coarse_sum = nullptr;
  const float* coarse_rows = nullptr;
  const int8_t* panels_q = nullptr;
  const float* panel_scale = nullptr;
  const int32_t* panel_sum = nullptr;
  const float* centroids = nullptr;
  const float* group_bound = nullptr;
};

constexpr float kMarginSigmas = 10.0f;

void assign_nearest(const float* X, int64_t n, int64_t d, const float* coarse_t, int64_t G, int64_t gp,
                    const float* panels, int64_t P, const int64_t* pcol, const uint32_t* ids, int64_t nprobe,
                    uint32_t* out, int num_threads, const AssignInt8* q8 = nullptr);

}  // namespace plaidx::cpu
