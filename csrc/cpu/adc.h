// adc.h: step 5 of search by table lookups over the residual codes (asymmetric distance computation),
// without decoding the candidates' tokens.
//
// A decoded token is v = c + s * w: its centroid c plus its residual w, one codeword per packed byte (the
// decode table (pb, 256, dpb), token.h) scaled by s (the pq codec's level; 1 for the scalar codec). For a
// query token qa,
//   <qa, v> / |v| = (<qa, c> + s * sum_p <qa_p, table[p, byte_p]>) * (1 / |v|),
// so the exact stage needs no decoding: <qa, c> is the first stage's cell score (St), the sum over the
// packed bytes is a sum of lookups in a per-query table, and 1 / |v| is derived from the codes (token_scales
// below, all at once, or fill_token_scales, per document as searches need it) and kept beside them. Per token
// that is pb 32-lane additions against the decode-quantise-score of the int8 stage.
//
// The per-query table (lut, (pb, 256, qc) int8, qc = adc_columns(qlen) query columns): entry (p, b, a) is
// round(<Q[a, p*dpb:(p+1)*dpb], table[p, b]> * inv[a]), the products summed over the dpb dimensions in
// order, with inv[a] = adc_entry_peak(pb) / bound[a] and bound[a] = max_p sum_v |Q[a, p*dpb + v]| *
// peak[p*dpb + v] (peak[j]: the largest |table[., ., j % dpb]| of dimension j): no entry leaves [-E, E] for
// E = adc_entry_peak(pb) <= 127, and no sum of pb entries leaves the int16 range, so the additions (in int16)
// are exact in any order. A column with bound 0 (padding, a zero query token) is all zeros.
// u[a] = bound[a] / E takes a sum back to a float. At d 128 and nbits 2 the table is 256 KiB.
//
// The token's score for column a: (((float(sum) * u[a]) * s) + St[c, a]) * scale[t], with scale[t] the
// token's inverse norm (float16, see token_scales). Reference: plaidx/engine/reference.py. The AVX-512BW and
// AVX2 copies round every operation on its own and give its values; the generic copies may fuse a multiply
// and an add, so they agree to float rounding. Each copy gives the same bits for any number of threads. The
// table's rounding costs about 1e-3 of a token's score at most (|entry error| <= bound / (2 E) per packed
// byte), less than the int8 exact stage's.
//
// Thread-safety: pure functions on caller buffers.
#pragma once

#include <cstdint>

#include "cpu/maxsim.h"

namespace plaidx::cpu {

// The entries' bound E for pb packed bytes: 127, or less where pb sums of 127 could leave int16.
inline float adc_entry_peak(int64_t pb) { return pb <= 252 ? 127.0f : static_cast<float>(32000 / pb); }
// Smallest norm token_scales divides by: 1 / 2^-14 = 16384 is still a float16 value.
constexpr float kAdcMinNorm = 6.103515625e-05f;

// Query columns of the table: qlen rounded up to a multiple of 32 (one 64-byte line of int16 per entry).
inline int64_t adc_columns(int64_t qlen) { return (qlen + 31) / 32 * 32; }

// peak (d,): peak[p * dpb + u] = max_b |table[p, b, u]| of the decode table (pb, 256, dpb).
void adc_table_peaks(const float* table, int64_t d, int nbits, float* peak);

// inv, u (qc,) of the query Q (qlen, d), as the header says; columns a >= qlen get 0.
void adc_query_scales(const float* Q, int64_t qlen, int64_t d, int nbits, const float* peak, int64_t qc, float* inv,
                      float* u);

// Rows [p0, p1) of lut (pb, 256, qc) from Qt (d, qc) (the query transposed, padding columns 0) and inv.
void adc_table_rows(const float* Qt, int64_t qc, const float* table, int64_t d, int nbits, const float* inv,
                    int64_t p0, int64_t p1, int8_t* lut);

// run_max (qc,) = running maxima over tokens [lo, hi) of col of their scores (header), St (nlist, qp) the
// query's cell scores with at least qc - qp readable floats after its last row. False on a code >= nlist.
template <class Code>
bool adc_max(const int8_t* lut, int64_t qc, const float* u, const float* St, int64_t qp, const Compressed<Code>& col,
             const uint16_t* scales, int64_t lo, int64_t hi, float* run_max);

// Which copy of adc_max and adc_table_rows runs here (PLAIDX_SIMD caps it): "avx512bw", "avx2" or "generic".
const char* adc_kernel_copy();

// out (n,) f32: 1 / max(|v_t|, kAdcMinNorm) of every token t of col decoded (not normalised; the squares summed
// in 8 lanes as normalize does), in parallel over chunks of tokens. Throws std::invalid_argument on a code
// >= nlist. The index keeps them as float16 (the values adc_max reads).
template <class Code>
void token_scales(const Compressed<Code>& col, float* out, int num_threads);

// The float16 bits of x rounded to nearest, ties to even (IEEE 754 binary16, as numpy's astype(np.float16)
// rounds): subnormals, infinities and NaN included.
uint16_t float_to_half_bits(float x);

// The inverse norms derived on demand, one document at a time, instead of all at once (token_scales): scales
// (n,) float16 bits and done (ndocs,) flags, both the caller's. For each of docs[0:count] whose flag is 0, its
// tokens' entries are set to token_scales' values rounded by float_to_half_bits, then its flag to 1 (release;
// the flags are read with acquire), so concurrent calls over the same arrays only ever write the same values.
// An index's first search then reads the codes of its candidates only, not of every token. In parallel over
// the documents; throws std::invalid_argument on a code >= nlist (the document's flag then stays 0).
template <class Code>
void fill_token_scales(const Compressed<Code>& col, uint16_t* scales, uint8_t* done, const int64_t* docs,
                       int64_t count, int num_threads);

}  // namespace plaidx::cpu
