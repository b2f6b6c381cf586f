// codec.h: residual compression (bucketize + bit-pack) and decompression of token embeddings.
//
// Buffers (all C-contiguous, caller-owned; B = 2**nbits, pb = d * nbits / 8):
//   residuals f32 (n, d), cutoffs f32 (d, B-1), weights f32 (d, B), centroids f32 (nlist, d),
//   codes u16 or u32 (n,) (Code: uint16_t or uint32_t), packed u8 (n, pb), out f32 (n, d).
// Preconditions: nbits in {1, 2, 4, 8}; d > 0 and a multiple of 8; n >= 0.
// Errors are thrown as std::invalid_argument (unsorted cutoffs, a code >= nlist).
// Thread-safety: pure functions; they only write their output buffers. num_threads: 0 means the
// OpenMP default; results do not depend on it.
#pragma once

#include <cstdint>
#include <vector>

namespace plaidx::cpu {

// packed[t] = bit-packed bucket codes of residuals[t]; the code of r[t, j] is the number of
// cutoffs[j, :] <= r[t, j] (cutoffs must be ascending per row, checked; NaN codes as 0). The code of
// dimension j sits in byte (j * nbits) / 8 at bit (j * nbits) % 8, least significant bits first.
void compress(const float* residuals, int64_t n, int64_t d, const float* cutoffs, int nbits, uint8_t* packed,
              int num_threads);

// packed[t] = the pq codec's bytes of residuals[t] (token.h): byte p < pb - 1 the nearest (squared distance,
// ties: the lower index) of the 256 codewords table[p, :] of dimensions p * dpb onward, the last byte's low
// nibble the nearest of table[pb - 1, 0:16], its high nibble the number of midpoints (levels[i] + levels[i+1]) / 2
// below the token's least-squares scale <r, w> / <w, w> of the chosen codewords w (1 for w = 0), summed in
// double. table (pb, 256, dpb) with pb = d * nbits / 8, dpb = 8 / nbits (nbits 1, 2 or 4); levels (16,)
// ascending. A NaN residual takes codeword 0. Distances are float sums over the sub-vector in order, so a copy
// compiled with fused multiply-adds can pick the other of two codewords whose distances tie to the last bit.
void pq_encode(const float* residuals, int64_t n, int64_t d, int nbits, const float* table, const float* levels,
               uint8_t* packed, int num_threads);

// out[t, j] = centroids[codes[t], j] + weights[j, code(t, j)]; rows divided by max(norm, 1e-12) when
// normalize. Throws when a code is >= nlist. Instantiated for Code = uint16_t and uint32_t.
// pq_table (pb, 256, dpb), levels (16,) or nullptr (token.h): the pq codec instead of weights (then unused).
template <class Code>
void decompress(const Code* codes, const uint8_t* packed, int64_t n, const float* centroids,
                int64_t nlist, int64_t d, const float* weights, int nbits, bool normalize, float* out,
                int num_threads, const float* pq_table = nullptr, const float* levels = nullptr);

// The decode table of token.h for these weights: weights itself when nbits == 8, otherwise a table of
// d * 256 floats built into storage. The returned pointer lives as long as weights and storage.
const float* build_decode_table(const float* weights, int64_t d, int nbits, std::vector<float>& storage);

// planes (2^nbits, d) = weights (d, 2^nbits) transposed, in storage; returns storage.data().
const float* build_weight_planes(const float* weights, int64_t d, int nbits, std::vector<float>& storage);

}  // namespace plaidx::cpu
