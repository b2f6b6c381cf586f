"""Kernel dispatch: the native core (plaidx._core) or the numba/numpy reference (plaidx._reference).

Both backends expose the same functions with the same contract. ``PLAIDX_BACKEND=reference`` forces
the reference; ``PLAIDX_BACKEND=native`` makes a missing native module an error instead of a fallback.

Conventions (all arrays C-contiguous, little-endian):
  n tokens, d dimensions (multiple of 8), nlist centroids, nbits in {1, 2, 4, 8},
  B = 2**nbits buckets, pb = d * nbits // 8 packed bytes per token, ndocs documents.
  codes: uint16 (n,) centroid id of every token (nlist <= 65536), or uint32 (n,) for any nlist; every
  function accepts both and gives the same results for the same ids.  packed: uint8 (n, pb) residual codes.
  doc_offsets: int64 (ndocs + 1,), doc_offsets[0] == 0, doc_offsets[-1] == n; document i owns tokens
  doc_offsets[i]:doc_offsets[i+1] (no empty documents in an index).
  Residual code packing: the code of dimension j sits in byte (j * nbits) // 8 at bit offset
  (j * nbits) % 8, least significant bits first.

Functions:
  compress(residuals f32 (n, d), cutoffs f32 (d, B-1), nbits) -> packed u8 (n, pb)
      code of r[t, j] = number of cutoffs[j, :] that are <= r[t, j]  (cutoffs ascending per row).
  pq_encode(residuals f32 (n, d), table f32 (pb, 256, dpb), levels f32 (16,) ascending, nbits in {1, 2, 4})
          -> packed u8 (n, pb)   the pq codec's bytes (codec.py; dpb = 8 // nbits):
      byte p < pb - 1 = the nearest of the codewords table[p, :] to r[t, p*dpb:(p+1)*dpb] (squared distance summed
      in order over the sub-vector; ties: the lower index); the last byte's low nibble the nearest of
      table[pb-1, 0:16], its high nibble = #{i < 15: (levels[i] + levels[i+1]) / 2 < s} with s = <r, w> / <w, w>
      (1 when w = 0) over the chosen codewords w, in float64. A NaN residual takes codeword 0. Copies that fuse
      multiply-adds may pick the other of two codewords whose distances tie to the last bit.
  decompress(codes u16/u32 (n,), packed u8 (n, pb), centroids f32 (nlist, d), weights f32 (d, B), nbits,
             normalize: bool) -> f32 (n, d)
      v[t, j] = centroids[codes[t], j] + weights[j, code(t, j)]; if normalize, v[t] /= max(|v[t]|, 1e-12).
      weights may be the pq codec's pair (table f32 (pb, 256, dpb), levels f32 (16,) or None), here and in
      search and exact_search: v[t, j] = centroids[codes[t], j] + s * table[p, packed[t, p], j - p*dpb] for
      p = j // dpb, s = levels[packed[t, pb-1] >> 4] (1 without levels); table entries and levels with at most
      12 significant bits make the product exact, so every backend gives the same bytes.
  build_ivf(codes u16/u32 (n,), doc_offsets i64 (ndocs+1,), nlist, *, num_threads=0)
          -> (ivf i32 (npairs,), ivf_offsets i64 (nlist+1,))
      for each cell c, ivf[ivf_offsets[c]:ivf_offsets[c+1]] is the ascending list of distinct documents
      with at least one token assigned to c.
  doc_cells(ivf, ivf_offsets, ndocs, *, num_threads=0) -> (cells (npairs,), cell_offsets i64 (ndocs+1,))
      the inverted file transposed: cells[cell_offsets[i]:cell_offsets[i+1]] are the distinct cells of
      document i, ascending; cells are uint16 when nlist <= 65536, else uint32.
  maxsim(Q f32 (nq, qlen, d), values f32 (n, d), doc_offsets i64 (ndocs+1,)) -> f32 (nq, ndocs)
      score[q, i] = sum_a max_{t in doc i} <Q[q, a], values[t]>  (0 for an empty document).
  centroid_scores(Q f32 (nq, qlen, d), centroids_t f32 (d, nlist)) -> S f32 (nq, qlen, nlist)
      S[q, a, c] = sum_j Q[q, a, j] * centroids_t[j, c] (centroids_t: the centroids transposed, made
      contiguous): the S argument of search. Native: summed sequentially over j, serial for a small
      call (one query); reference: numpy's BLAS GEMM (same values up to rounding).
  search(Q f32 (nq, qlen, d), S f32 (nq, qlen, nlist) or None, codes, packed, doc_offsets, ivf,
         ivf_offsets, centroids, weights, nbits, allowed u8 (ndocs,) or (0,), nprobe, threshold, ndocs,
         n_exact, k) -> (scores f32 (nq, k), docs i64 (nq, k))   PLAID pipeline per query q, where
      S = None means centroid_scores(Q, centroids.T) (native: computed per query inside the search,
      bit for bit the same values, without materialising S):
      1. probe: for each query token a, the nprobe cells with the highest S[q, a, :] (ties: lower cell),
         a cell whose ivf list is empty ranking as -inf (a probe is never spent on a cell with no
         document while a non-empty one is left).
      2. candidates: union of ivf lists of the probed cells, keeping documents with allowed[i] != 0
         (every document when allowed has size 0).
      3. keep[c] = max_a S[q, a, c] >= threshold; pruned(i) = sum_a max over tokens t of i with
         keep[codes[t]] of S[q, a, codes[t]] (a max over no token counts 0). Keep the top `ndocs`.
      4. full(i) = sum_a max_t S[q, a, codes[t]] over those; keep the top `n_exact`. (threshold -inf keeps
         every cell: pruned(i) = full(i), and steps 3-4 keep the top `n_exact` candidates by full(i).)
      5. exact(i) = sum_a max_t <Q[q, a], decompress(t, normalize=True)>; return the top k.
      The keyword cell_codes=quantize_rows(centroids) (with S = None) makes S the quantised cell scores
      cellq.quantized_cell_scores(Q, cell_codes): about 4x fewer operations for stage 1 on CPUs with AVX-512
      VNNI, the same values on every CPU, the CUDA kernels and the reference (Q must be finite, d <= 1024).
      The keyword kept=(vectors int8 (n, d), scales f32 (n,)) (every token's kept int8 vector, the rerank
      tier's) makes step 5 the quantised MaxSim over them instead of the decompressed tokens:
      kept(i) = sum_a max_{t in doc i} (float(<vectors[t], qa[a]>) * scales[t]) * sa[a], with
      (qa, sa, _) = quantize_rows of the query tokens, the maxima summed over a in order from 0
      (cellq.kept_maxsim; exact integers again, so the same values everywhere; Q finite, d <= 1024).
      kept=(vectors float16 (n, d), None): step 5 is maxsim over the vectors converted to float32.
      The keyword exact_int8=True (not with kept) makes step 5 the same quantised MaxSim over the decompressed
      tokens, each quantised as its unit vector (cellq.quantize_unit_rows: the bytes of rint(v * (127 / p)),
      p = max(max_j |v_j|, 1e-30), scale (p / 127) / max(|v|, 1e-12), for v not normalised): about 4x fewer
      operations than the float step 5 on CPUs with AVX-512 VNNI, the same bytes everywhere (the scales
      up to the last bit of |v|); Q finite, d <= 1024.
      The keyword token_scales=token_scales(...).astype(np.float16) (not with kept or exact_int8) makes step 5
      a sum of table lookups over the codes instead of decompressing them (csrc/cpu/adc.h):
      adc(i) = sum_a max_{t in doc i} (((float(sum_p lut[p, packed[t, p], a]) * u[a]) * s_t) + S[q, a, codes[t]])
      * token_scales[t], with (lut, u) = reference.adc_table(Q[q], decode table) (int8 entries, one int16 sum
      per token exact in any order) and s_t the token's pq level (1 for bucket weights): <Q[q, a], v_t> / |v_t|
      up to the table's rounding (about 1e-3 of a token's score) and S's. Faster than the float and int8 step 5
      on every CPU we measured (0.40-0.68x the int8 stage's time on AVX-512, 0.23-0.30x the float one's on AVX2);
      the AVX-512BW and AVX2 copies give the reference's values, the generic ones agree to float rounding.
      With token_scales_done=flags (uint8 (ndocs,)) the scales are derived on demand: before step 5 scores a
      candidate whose flag is 0, its tokens' entries of token_scales are set (token_scales(...) rounded to
      float16, ties to even) and its flag to 1. Both arrays must be writable and are written (the only writes a
      search makes outside its results); concurrent searches over the same arrays write the same values.
      The keyword candidates=docs (int64 (m,) distinct documents in [0, ndocs), ascending) replaces steps 1-2: the
      candidates are the allowed ones of docs and no cell is probed (S is still computed: steps 3-5 read it).
      The keyword max_list=m (> 0) makes step 2 take no documents from a probed cell whose list holds more than m
      (a hub; SearchParams.max_cell_docs): they are candidates only through the other probed cells. 0: no limit.
  token_scales(codes, packed, centroids, weights, nbits) -> f32 (n,)
      1 / max(|decompress(t, normalize=False)|, 2**-14) of every token (squares summed in float32 in 8 lanes,
      j mod 8, then pairwise: the same values everywhere).
  kept_scores(Q, kept, doc_offsets, docs i64 (m,)) -> f32 (nq, m)
      step 5's score with ``kept`` of each listed document (any documents, not only a search's candidates):
      the rerank tier's scores where the search itself does not run on the CPU (GPU searches, exhaustive
      search over the kept vectors).
  assign_nearest(X f32 (n, d), coarse_t f32 (d, gp), n_groups, panels f32 (d * P,), pcol i64 (G+1,),
                 ids u32 (P,), nprobe) -> codes u32 (n,)
      the build's nearest centroid, searched group by group: group g owns columns [pcol[g], pcol[g+1])
      (multiples of 8; ids[c] the centroid of column c, 0xFFFFFFFF on padding), stored transposed as one
      contiguous (d, pcol[g+1] - pcol[g]) block at panels[d * pcol[g]:]; token t scores the n_groups group centres (coarse_t's first
      columns), keeps its nprobe best groups (ties: the lower group) and takes the best centroid in them
      (ties: the lower id). One group of every centroid is the exact nearest centroid. Native: each score
      summed sequentially over j; reference: numpy's BLAS (so near-ties may resolve differently).
      The keyword int8=clustering.int8_layout(...) (``Assigner`` passes it where ``INT8_VNNI``) lets the
      native kernel pick the candidates by int8 dot products on AVX-512 VNNI CPUs and score the near ones
      again in float32: the same codes, in about half the time (csrc/cpu/assign.h AssignInt8,
      benchmarks/results/assign_int8_*.md); the reference ignores it.
      The keyword doc_cells=doc_cells(ivf, ivf_offsets, ndocs) lets the native kernel read each
      candidate's distinct cells in steps 3-4 instead of every token's code (the same maxima, about a
      third of the reads on real collections; its cells must have the dtype of codes); results are
      identical with or without it.
      Every top selection orders by score descending, then document index ascending. Rows with fewer
      than k results are padded with -inf / -1. Results do not depend on the thread count.
  exact_search(Q, codes, packed, doc_offsets, centroids, weights, nbits, allowed, k) -> (scores, docs)
      exact(i) of step 5 over every allowed document, top k, same ordering and padding.
  build_info() -> dict: what the backend has; "int8_vnni": whether the int8 kernels run as AVX-512 VNNI;
      "adc_copy": which copy of the lookup-table step 5 (token_scales) runs: "avx512bw", "avx2" or "generic";
      "int8_amx": whether the int8 cell scores run as AMX tile products (d % 64 == 0; the VNNI values).
  quantize_rows(x f32 (n, d)) -> (q int8 (n, d), s f32 (n,), sums i32 (n,))
      row-wise symmetric int8: s = max(max_j |x[i, j]|, 1e-30) / 127, q = rint(x / s) clipped to
      [-127, 127], each step one float32 operation (x must be finite); sums = q.sum(1).
      cellq.quantized_cell_scores(Q, (qc, sc, _)) = (float(<qc[c], qa[a]>) * sc[c]) * sa[a] with
      (qa, sa, _) = quantize_rows of the query tokens: the integer dot products are exact, so every
      implementation gives the same scores bit for bit.
  centroid_scores, maxsim, search, exact_search, build_ivf, doc_cells: keyword-only num_threads=0 (0: OpenMP
      default); results never depend on it.
"""

from __future__ import annotations

import os

_BACKEND_ENV = os.environ.get("PLAIDX_BACKEND", "auto").strip().lower()

_native = None
_native_error = None
if _BACKEND_ENV != "reference":
    try:
        from .. import _core as _native  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - depends on the build
        _native_error = f"{type(exc).__name__}: {exc}"
        if _BACKEND_ENV == "native":
            raise ImportError(
                "PLAIDX_BACKEND=native but the native module plaidx._core could not be imported "
                f"({_native_error}). Build it with `pip install -e .` or unset PLAIDX_BACKEND."
            ) from exc

if _native is not None:
    backend = _native
    BACKEND_NAME = "native"
else:
    from . import reference as backend  # noqa: E402

    BACKEND_NAME = "reference"

compress = backend.compress
pq_encode = backend.pq_encode
decompress = backend.decompress
build_ivf = backend.build_ivf
doc_cells = backend.doc_cells
centroid_scores = backend.centroid_scores
maxsim = backend.maxsim
search = backend.search
exact_search = backend.exact_search
quantize_rows = backend.quantize_rows
kept_scores = backend.kept_scores
token_scales = backend.token_scales
assign_nearest = backend.assign_nearest

# Whether the int8 kernels (quantised cell scores, the int8 exact stage) run as AVX-512 VNNI here: where they do
# not, their generic copies are slower than float32, so the search's defaults score in float32 instead. The
# build's assignment takes its int8 candidate scores (assign_nearest's int8=) only where this is True.
INT8_VNNI = bool(backend.build_info().get("int8_vnni", False))
# Query tokens up to which those VNNI kernels run (csrc/cpu/search.cpp kMaxQp16); longer queries take the
# generic copies, so the defaults score them in float32 too.
VNNI_MAX_QUERY_TOKENS = 256


def native_error() -> str | None:
    """Why the native module is not in use, or None when it is."""
    if _native is not None:
        return None
    if _BACKEND_ENV == "reference":
        return "PLAIDX_BACKEND=reference"
    return _native_error
