// bindings.cpp: the pybind11 module plaidx._core, the only file that touches Python objects.
//
// Every function checks dtype, C-contiguity, alignment and shapes while holding the GIL and raises
// TypeError (wrong type or dtype) or ValueError (shape, layout, value) with a message that says how
// to fix the call; nothing is converted or copied silently. It then releases the GIL in an inner
// scope that touches no Python object and calls the pure kernels of csrc/cpu. Kernel errors
// (std::invalid_argument) surface as ValueError. The contract is the docstring of plaidx/_kernels.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/adc.h"
#include "cpu/assign.h"
#include "cpu/build_info.h"
#include "cpu/centroid_scores.h"
#include "cpu/codec.h"
#include "cpu/ivf.h"
#include "cpu/maxsim.h"
#include "cpu/pagein.h"
#include "cpu/quantize.h"
#include "cpu/search.h"
#include "cpu/token.h"
#include "cpu/validate.h"
#include "py_arrays.h"

namespace py = pybind11;
namespace cpu = plaidx::cpu;
using namespace plaidx::py_arrays;  // NOLINT: the array checks shared with the CUDA bindings

namespace {

// The compressed-collection arguments shared by search and exact_search.
template <class Code>
struct CollectionArgs {
  cpu::Compressed<Code> col;
  std::vector<float> table_storage;
  std::vector<float> planes_storage;
  const uint8_t* allowed;
};

// col.table / col.planes from a codebook: the pq codec's own table, or the bucket weights' planes and (unless
// the AVX-512 2-bit decoder reads only the planes and need_table is false) their per-byte decode table (d * 256
// floats, ~10 us at d = 128). Done before the GIL is released, so that the pointers are set.
template <class Code>
void set_codebook(cpu::Compressed<Code>& col, const float* weights, const float* table, int64_t d, int nbits,
                  bool need_table, std::vector<float>& table_storage, std::vector<float>& planes_storage) {
  if (table != nullptr) {  // the pq codec: its own table, no planes (decode2_avx512 decodes bucket weights only)
    col.table = table;
    return;
  }
  col.planes = cpu::build_weight_planes(weights, d, nbits, planes_storage);
  col.table = nbits == 2 && cpu::have_decode2_avx512() && !need_table
                  ? nullptr
                  : cpu::build_decode_table(weights, d, nbits, table_storage);
}

template <class Code>
void collection_args(const char* fn, const py::handle& codes_o, const py::handle& packed_o,
                     const py::handle& offsets_o, const py::handle& centroids_o, const py::handle& weights_o,
                     int nbits, const py::handle& allowed_o, int64_t d, CollectionArgs<Code>& out,
                     bool need_table = false) {
  const CodedViews<Code> v =
      collection_views<Code>(fn, codes_o, packed_o, offsets_o, centroids_o, weights_o, nbits, allowed_o, d);
  out.col = cpu::Compressed<Code>{v.codes, v.packed, v.n, v.doc_offsets, v.ndocs, v.centroids, v.nlist, d, nbits,
                                  nullptr, nullptr, v.levels};
  out.allowed = v.allowed;
  set_codebook(out.col, v.weights, v.table, d, nbits, need_table, out.table_storage, out.planes_storage);
}

py::array_t<uint8_t> compress(const py::object& residuals_o, const py::object& cutoffs_o, int nbits) {
  const char* fn = "compress";
  check_nbits(fn, nbits);
  const auto r = view<float>(residuals_o, fn, "residuals", 2, "(n, d)");
  const auto cut = view<float>(cutoffs_o, fn, "cutoffs", 2, "(d, 2**nbits - 1)");
  const int64_t n = r[0], d = r[1];
  check_dim(fn, d);
  expect(cut[0] == d && cut[1] == (int64_t{1} << nbits) - 1,
         std::string(fn) + ": cutoffs must have shape (d, 2**nbits - 1) = (" + std::to_string(d) + ", " +
             std::to_string((1 << nbits) - 1) + "), got " + shape_str(cut.shape));
  const int64_t pb = d * nbits / 8;
  py::array_t<uint8_t> out({n, pb});
  uint8_t* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::compress(r.data, n, d, cut.data, nbits, o, 0);
  }
  return out;
}

py::array_t<uint8_t> pq_encode(const py::object& residuals_o, const py::object& table_o, const py::object& levels_o,
                               int nbits) {
  const char* fn = "pq_encode";
  const std::string f(fn);
  check_nbits(fn, nbits);
  expect(nbits != 8, f + ": nbits must be 1, 2 or 4 (a byte codes 8 / nbits dimensions of the pq codec), got 8");
  const auto r = view<float>(residuals_o, fn, "residuals", 2, "(n, d)");
  const int64_t n = r[0], d = r[1];
  check_dim(fn, d);
  const CodebookView book = codebook_view(fn, py::make_tuple(table_o, levels_o), d, nbits);
  expect(book.levels != nullptr, f + ": levels must be given (16,)");
  for (int i = 0; i + 1 < 16; ++i)
    expect(book.levels[i] <= book.levels[i + 1], f + ": levels must be ascending (and not NaN)");
  py::array_t<uint8_t> out({n, d * nbits / 8});
  uint8_t* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::pq_encode(r.data, n, d, nbits, book.table, book.levels, o, 0);
  }
  return out;
}

// Tokens to decode (codes, packed, centroids, weights), checked against each other: decompress's and
// token_scales's arguments.
template <class Code>
struct TokenViews {
  View<Code> codes;
  View<uint8_t> packed;
  View<float> centroids;
  CodebookView book;
  int64_t n, nlist, d;
};

template <class Code>
TokenViews<Code> token_views(const char* fn, const py::object& codes_o, const py::object& packed_o,
                             const py::object& centroids_o, const py::object& weights_o, int nbits) {
  check_nbits(fn, nbits);
  const auto codes = view<Code>(codes_o, fn, "codes", 1, "(n,)");
  const auto packed = view<uint8_t>(packed_o, fn, "packed", 2, "(n, d * nbits // 8)");
  const auto centroids = view<float>(centroids_o, fn, "centroids", 2, "(nlist, d)");
  const int64_t n = codes[0], nlist = centroids[0], d = centroids[1];
  check_dim(fn, d);
  const CodebookView book = codebook_view(fn, weights_o, d, nbits);
  const std::string f(fn);
  expect(packed[0] == n && packed[1] == d * nbits / 8,
         f + ": packed must have shape (n, d * nbits // 8) = (" + std::to_string(n) + ", " +
             std::to_string(d * nbits / 8) + "), got " + shape_str(packed.shape));
  expect(nlist >= 1 && nlist <= max_nlist_for<Code>(),
         f + ": nlist (centroids.shape[0]) must be in [1, " + std::to_string(max_nlist_for<Code>()) + "] for " +
             DtypeName<Code>::value + " codes, got " + std::to_string(nlist));
  return TokenViews<Code>{codes, packed, centroids, book, n, nlist, d};
}

template <class Code>
py::array_t<float> decompress_t(const py::object& codes_o, const py::object& packed_o,
                                const py::object& centroids_o, const py::object& weights_o, int nbits,
                                bool normalize) {
  const TokenViews<Code> v = token_views<Code>("decompress", codes_o, packed_o, centroids_o, weights_o, nbits);
  const auto &codes = v.codes, &packed = v.packed, &centroids = v.centroids;
  const CodebookView book = v.book;
  const int64_t n = v.n, nlist = v.nlist, d = v.d;
  py::array_t<float> out({n, d});
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::decompress(codes.data, packed.data, n, centroids.data, nlist, d, book.weights, nbits, normalize, o, 0,
                    book.table, book.levels);
  }
  return out;
}

py::array_t<float> decompress(const py::object& codes_o, const py::object& packed_o,
                              const py::object& centroids_o, const py::object& weights_o, int nbits,
                              bool normalize) {
  return with_code_type(codes_o, "decompress", "codes", [&](auto code) {
    return decompress_t<decltype(code)>(codes_o, packed_o, centroids_o, weights_o, nbits, normalize);
  });
}

template <class Code>
py::array_t<float> token_scales_t(const py::object& codes_o, const py::object& packed_o,
                                  const py::object& centroids_o, const py::object& weights_o, int nbits,
                                  int num_threads) {
  check_threads("token_scales", num_threads);
  const TokenViews<Code> v = token_views<Code>("token_scales", codes_o, packed_o, centroids_o, weights_o, nbits);
  const CodebookView book = v.book;
  const int64_t n = v.n, d = v.d;
  cpu::Compressed<Code> col{v.codes.data, v.packed.data, n, nullptr, 0, v.centroids.data, v.nlist, d, nbits,
                            nullptr, nullptr, book.levels};
  std::vector<float> table_storage, planes_storage;
  set_codebook(col, book.weights, book.table, d, nbits, false, table_storage, planes_storage);
  py::array_t<float> out(n);
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::token_scales(col, o, num_threads);
  }
  return out;
}

py::array_t<float> token_scales(const py::object& codes_o, const py::object& packed_o, const py::object& centroids_o,
                                const py::object& weights_o, int nbits, int num_threads) {
  return with_code_type(codes_o, "token_scales", "codes", [&](auto code) {
    return token_scales_t<decltype(code)>(codes_o, packed_o, centroids_o, weights_o, nbits, num_threads);
  });
}

template <class Code>
py::tuple build_ivf_t(const py::object& codes_o, const py::object& offsets_o, int64_t nlist, int num_threads) {
  const char* fn = "build_ivf";
  check_threads(fn, num_threads);
  const auto codes = view<Code>(codes_o, fn, "codes", 1, "(n,)");
  const auto offsets = view<int64_t>(offsets_o, fn, "doc_offsets", 1, "(ndocs + 1,)");
  expect(nlist >= 1 && nlist <= max_nlist_for<Code>(),
         std::string(fn) + ": nlist must be in [1, " + std::to_string(max_nlist_for<Code>()) + "] for " +
             DtypeName<Code>::value + " codes, got " + std::to_string(nlist));
  expect(offsets[0] >= 1, std::string(fn) + ": doc_offsets must have ndocs + 1 >= 1 entries, got 0");
  const int64_t n = codes[0], ndocs = offsets[0] - 1;
  py::array_t<int64_t> ivf_offsets(nlist + 1);
  int64_t* io = mutable_data(ivf_offsets);
  int64_t npairs = 0;
  cpu::IvfParts counted;  // what the first pass counted, reused by the second
  {
    py::gil_scoped_release release;
    npairs = cpu::ivf_offsets(codes.data, n, offsets.data, ndocs, nlist, io, num_threads, &counted);
  }
  py::array_t<int32_t> ivf(npairs);
  int32_t* iv = mutable_data(ivf);
  {
    py::gil_scoped_release release;
    cpu::fill_ivf(codes.data, offsets.data, ndocs, nlist, io, iv, num_threads, &counted);
  }
  return py::make_tuple(ivf, ivf_offsets);
}

py::tuple build_ivf(const py::object& codes_o, const py::object& offsets_o, int64_t nlist, int num_threads) {
  return with_code_type(codes_o, "build_ivf", "codes", [&](auto code) {
    return build_ivf_t<decltype(code)>(codes_o, offsets_o, nlist, num_threads);
  });
}

// cells: uint16 when nlist <= 65536, else uint32 (the width the index stores its codes in).
template <class Code>
py::tuple doc_cells_t(const View<int32_t>& ivf, const View<int64_t>& ivf_offsets, int64_t nlist, int64_t ndocs,
                      int num_threads) {
  py::array_t<int64_t> offsets(ndocs + 1);
  py::array_t<Code> cells(ivf[0]);
  int64_t* o = mutable_data(offsets);
  Code* c = mutable_data(cells);
  {
    py::gil_scoped_release release;
    cpu::doc_cells(ivf.data, ivf[0], ivf_offsets.data, nlist, ndocs, o, c, num_threads);
  }
  return py::make_tuple(cells, offsets);
}

py::tuple doc_cells(const py::object& ivf_o, const py::object& ivf_offsets_o, int64_t ndocs, int num_threads) {
  const char* fn = "doc_cells";
  check_threads(fn, num_threads);
  const auto ivf = view<int32_t>(ivf_o, fn, "ivf", 1, "(npairs,)");
  const auto ivf_offsets = view<int64_t>(ivf_offsets_o, fn, "ivf_offsets", 1, "(nlist + 1,)");
  const int64_t nlist = ivf_offsets[0] - 1;
  expect(nlist >= 1 && nlist <= max_nlist_for<uint32_t>(),
         std::string(fn) + ": ivf_offsets must have nlist + 1 entries with nlist in [1, 2**32], got " +
             shape_str(ivf_offsets.shape));
  expect(ndocs >= 0, std::string(fn) + ": ndocs must be >= 0, got " + std::to_string(ndocs));
  if (nlist <= max_nlist_for<uint16_t>()) return doc_cells_t<uint16_t>(ivf, ivf_offsets, nlist, ndocs, num_threads);
  return doc_cells_t<uint32_t>(ivf, ivf_offsets, nlist, ndocs, num_threads);
}

py::array_t<float> maxsim(const py::object& Q_o, const py::object& values_o, const py::object& offsets_o,
                          int num_threads) {
  const char* fn = "maxsim";
  check_threads(fn, num_threads);
  const auto Q = view<float>(Q_o, fn, "Q", 3, "(nq, qlen, d)");
  const auto values = view<float>(values_o, fn, "values", 2, "(n, d)");
  const auto offsets = view<int64_t>(offsets_o, fn, "doc_offsets", 1, "(ndocs + 1,)");
  const int64_t nq = Q[0], qlen = Q[1], d = Q[2];
  check_dim(fn, d);
  const std::string f(fn);
  expect(qlen >= 1, f + ": queries need at least one token (Q.shape[1] >= 1)");
  expect(values[1] == d, f + ": values must have shape (n, d) with d = " + std::to_string(d) + ", got " +
                             shape_str(values.shape));
  expect(offsets[0] >= 1, f + ": doc_offsets must have ndocs + 1 >= 1 entries, got 0");
  const int64_t ndocs = offsets[0] - 1;
  py::array_t<float> out({nq, ndocs});
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::maxsim(Q.data, nq, qlen, d, values.data, values[0], offsets.data, ndocs, o, num_threads);
  }
  return out;
}

py::tuple quantize_rows(const py::object& x_o) {
  const char* fn = "quantize_rows";
  const auto x = view<float>(x_o, fn, "x", 2, "(n, d)");
  const int64_t n = x[0], d = x[1];
  py::array_t<int8_t> q({n, d});
  py::array_t<float> scale({n});
  py::array_t<int32_t> sums({n});
  bool ok;
  {
    py::gil_scoped_release release;
    ok = cpu::quantize_rows(x.data, n, d, mutable_data(q), mutable_data(scale), mutable_data(sums));
  }
  expect(ok, std::string(fn) + ": x must be finite (a value is NaN or infinite)");
  return py::make_tuple(q, scale, sums);
}

py::array_t<float> centroid_scores(const py::object& Q_o, const py::object& centroids_t_o, int num_threads) {
  const char* fn = "centroid_scores";
  check_threads(fn, num_threads);
  const auto Q = view<float>(Q_o, fn, "Q", 3, "(nq, qlen, d)");
  const auto ct = view<float>(centroids_t_o, fn, "centroids_t", 2, "(d, nlist)");
  const int64_t nq = Q[0], qlen = Q[1], d = Q[2], nlist = ct[1];
  check_dim(fn, d);
  const std::string f(fn);
  expect(qlen >= 1, f + ": queries need at least one token (Q.shape[1] >= 1)");
  expect(ct[0] == d, f + ": centroids_t must have shape (d, nlist) with d = " + std::to_string(d) +
                         " (the centroids transposed), got " + shape_str(ct.shape));
  expect(nlist >= 1 && nlist <= max_nlist_for<uint32_t>(),
         f + ": nlist (centroids_t.shape[1]) must be in [1, 2**32], got " + std::to_string(nlist));
  py::array_t<float> out({nq, qlen, nlist});
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::query_centroid_scores(Q.data, nq, qlen, d, ct.data, nlist, o, num_threads);
  }
  return out;
}

// The kept vectors of the rerank tier: (vectors int8 (n, d), scales f32 (n,)) or (vectors float16 (n, d), None).
struct KeptArgs {
  View<int8_t> kv{nullptr, {0}};
  View<float> ks{nullptr, {0}};
  View<uint16_t> kh{nullptr, {0}};
  cpu::KeptRows rows;
};

// n < 0: as many rows as the vectors have (kept_scores, which reads n from them).
KeptArgs kept_args(const py::object& kept_o, const char* fn, int64_t n, int64_t d) {
  const std::string f(fn);
  KeptArgs a;
  if (kept_o.is_none()) return a;
  const py::tuple t = kept_o.cast<py::tuple>();
  expect(t.size() == 2, f + ": kept must be the (vectors, scales) pair of the kept int8 vectors or "
                            "(vectors, None) for float16 ones");
  std::vector<int64_t> shape;
  if (t[1].is_none()) {
    a.kh = half_view(t[0], fn, "kept[0]", 2, "(n, d)",
                     f + ": kept = (vectors, None) needs float16 vectors (int8 ones come with their scales)");
    shape = {a.kh[0], a.kh[1], a.kh[0]};
  } else {
    a.kv = view<int8_t>(t[0], fn, "kept[0]", 2, "(n, d)");
    a.ks = view<float>(t[1], fn, "kept[1]", 1, "(n,)");
    shape = {a.kv[0], a.kv[1], a.ks[0]};
  }
  if (n < 0) n = shape[0];
  expect(shape[0] == n && shape[1] == d && shape[2] == n,
         f + ": kept must hold one row (and one scale, for int8) per token: (n, d) = (" + std::to_string(n) + ", " +
             std::to_string(d) + ")");
  a.rows = cpu::KeptRows{cpu::Int8Rows{a.kv.data, a.ks.data, nullptr}, a.kh.data};
  return a;
}

py::array_t<float> kept_scores(const py::object& Q_o, const py::object& kept_o, const py::object& offsets_o,
                               const py::object& docs_o, int num_threads) {
  const char* fn = "kept_scores";
  const std::string f(fn);
  check_threads(fn, num_threads);
  expect(!kept_o.is_none(), f + ": kept must be given");
  const auto Q = view<float>(Q_o, fn, "Q", 3, "(nq, qlen, d)");
  const auto offsets = view<int64_t>(offsets_o, fn, "doc_offsets", 1, "(ndocs + 1,)");
  const auto docs = view<int64_t>(docs_o, fn, "docs", 1, "(m,)");
  const int64_t nq = Q[0], qlen = Q[1], d = Q[2];
  check_dim(fn, d);
  expect(qlen >= 1, f + ": queries need at least one token (Q.shape[1] >= 1)");
  expect(offsets[0] >= 1, f + ": doc_offsets needs at least one entry");
  const int64_t ndocs = offsets[0] - 1;
  const KeptArgs kept = kept_args(kept_o, fn, -1, d);
  const int64_t n = kept.kv.data != nullptr ? kept.kv[0] : kept.kh[0];
  py::array_t<float> out({nq, docs[0]});
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::kept_scores(Q.data, nq, qlen, d, offsets.data, ndocs, n, kept.rows, docs.data, docs[0], o, num_threads);
  }
  return out;
}

// float16_bits(x f32 (n,)) -> u16 (n,): the rounding of the scales the search derives on demand (adc.h), exposed
// to test it against numpy's astype(np.float16).
py::array_t<uint16_t> float16_bits(const py::object& x_o) {
  const auto x = view<float>(x_o, "float16_bits", "x", 1, "(n,)");
  py::array_t<uint16_t> out(x[0]);
  uint16_t* o = mutable_data(out);
  for (int64_t i = 0; i < x[0]; ++i) o[i] = cpu::float_to_half_bits(x.data[i]);
  return out;
}

// page_in_rows(arrays, doc_offsets, docs) -> int: pagein.h's advice over the rows of docs in each array (C-contiguous,
// one row per token: shape[0] == doc_offsets[-1]). What the search does before step 5; exposed to test it.
int64_t page_in_rows(const py::list& arrays_o, const py::object& offsets_o, const py::object& docs_o) {
  const char* fn = "page_in_rows";
  const std::string f(fn);
  const auto offsets = view<int64_t>(offsets_o, fn, "doc_offsets", 1, "(ndocs + 1,)");
  const auto docs = view<int64_t>(docs_o, fn, "docs", 1, "(m,)");
  expect(offsets[0] >= 1, f + ": doc_offsets needs at least one entry");
  const int64_t ndocs = offsets[0] - 1, n = offsets.data[ndocs];
  cpu::check_offsets(offsets.data, ndocs, n, "doc_offsets");
  for (int64_t i = 0; i < docs[0]; ++i)
    expect(docs.data[i] >= 0 && docs.data[i] < ndocs,
           f + ": docs[" + std::to_string(i) + "] = " + std::to_string(docs.data[i]) + " is outside [0, ndocs)");
  std::vector<cpu::TokenRows> rows;
  for (const py::handle& h : arrays_o) {
    expect(py::isinstance<py::array>(h), f + ": arrays must be numpy arrays");
    const py::array a = py::reinterpret_borrow<py::array>(h);
    expect(a.ndim() >= 1 && (a.flags() & py::array::c_style) != 0 && a.shape(0) == n,
           f + ": each array must be C-contiguous with one row per token (shape[0] == doc_offsets[-1] == " +
               std::to_string(n) + ")");
    rows.push_back(cpu::TokenRows{a.data(), n > 0 ? static_cast<int64_t>(a.nbytes()) / n : 0});
  }
  py::gil_scoped_release release;
  return cpu::page_in_rows(rows.data(), static_cast<int>(rows.size()), offsets.data, docs.data, docs[0]);
}

py::array_t<uint32_t> assign_nearest(const py::object& X_o, const py::object& coarse_t_o, int64_t n_groups,
                                     const py::object& panels_o, const py::object& pcol_o, const py::object& ids_o,
                                     int64_t nprobe, int num_threads, const py::object& int8_o) {
  const char* fn = "assign_nearest";
  const std::string f(fn);
  check_threads(fn, num_threads);
  const auto X = view<float>(X_o, fn, "X", 2, "(n, d)");
  const auto ct = view<float>(coarse_t_o, fn, "coarse_t", 2, "(d, gp)");
  const auto panels = view<float>(panels_o, fn, "panels", 1, "(d * P,)");
  const auto pcol = view<int64_t>(pcol_o, fn, "pcol", 1, "(G + 1,)");
  const auto ids = view<uint32_t>(ids_o, fn, "ids", 1, "(P,)");
  const int64_t n = X[0], d = X[1], gp = ct[1], P = ids[0];
  check_dim(fn, d);
  expect(ct[0] == d, f + ": coarse_t must have d = " + std::to_string(d) + " rows");
  expect(n_groups >= 1 && gp >= n_groups && gp % 8 == 0,
         f + ": coarse_t must have a multiple of 8 columns, at least n_groups = " + std::to_string(n_groups));
  expect(pcol[0] == n_groups + 1, f + ": pcol must have n_groups + 1 entries");
  expect(P % 8 == 0 && panels[0] == d * P, f + ": panels must hold d * P floats, P = ids.size a multiple of 8");
  expect(nprobe >= 1 && nprobe <= n_groups, f + ": nprobe must be in [1, n_groups], got " + std::to_string(nprobe));
  expect(pcol.data[0] == 0 && pcol.data[n_groups] == P, f + ": pcol must run from 0 to P");
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t a = pcol.data[g], b = pcol.data[g + 1];
    expect(b > a && a % 8 == 0 && b % 8 == 0, f + ": every group needs a non-empty column range starting and "
                                                  "ending on a multiple of 8 (pcol)");
    bool real = false;
    for (int64_t c = a; c < b && !real; ++c) real = ids.data[c] != cpu::kNoCentroid;
    expect(real, f + ": group " + std::to_string(g) + " has no centroid (every id is 0xFFFFFFFF)");
  }
  // Optional: the int8 copies of the layout (cpu/assign.h AssignInt8), used where the CPU has avx512-vnni.
  cpu::AssignInt8 q8;
  const bool int8 = !int8_o.is_none();
  if (int8) {
    const py::tuple t = int8_o.cast<py::tuple>();
    expect(t.size() == 9, f + ": int8 must be the 9 arrays of clustering.int8_layout (coarse_q, coarse_scale, "
                              "coarse_sum, coarse_rows, panels_q, panel_scale, panel_sum, centroids, group_bound)");
    const auto cq = view<int8_t>(t[0], fn, "coarse_q", 1, "(d * gp,)");
    const auto cs = view<float>(t[1], fn, "coarse_scale", 1, "(gp,)");
    const auto csum = view<int32_t>(t[2], fn, "coarse_sum", 1, "(gp,)");
    const auto crows = view<float>(t[3], fn, "coarse_rows", 2, "(gp, d)");
    const auto pq = view<int8_t>(t[4], fn, "panels_q", 1, "(d * P,)");
    const auto ps = view<float>(t[5], fn, "panel_scale", 1, "(P,)");
    const auto psum = view<int32_t>(t[6], fn, "panel_sum", 1, "(P,)");
    const auto cents = view<float>(t[7], fn, "centroids", 2, "(nlist, d)");
    const auto gb = view<float>(t[8], fn, "group_bound", 2, "(G, 2)");
    expect(d % 4 == 0 && gp % 16 == 0, f + ": int8 needs d % 4 == 0 and coarse_t's columns a multiple of 16");
    expect(cq[0] == d * gp && cs[0] == gp && csum[0] == gp && crows[0] == gp && crows[1] == d,
           f + ": int8's coarse arrays must match coarse_t (d * gp bytes, gp scales and sums, (gp, d) rows)");
    expect(pq[0] == d * P && ps[0] == P && psum[0] == P,
           f + ": int8's panel arrays must match panels (d * P bytes, P scales and sums)");
    expect(cents[1] == d && gb[0] == n_groups && gb[1] == 2,
           f + ": int8's centroids must be (nlist, d) and group_bound (n_groups, 2)");
    for (int64_t g = 0; g <= n_groups; ++g)
      expect(pcol.data[g] % 16 == 0, f + ": int8 needs every pcol entry a multiple of 16");
    for (int64_t c = 0; c < P; ++c)
      expect(ids.data[c] == cpu::kNoCentroid || ids.data[c] < static_cast<uint32_t>(cents[0]),
             f + ": ids must name rows of int8's centroids");
    q8 = {cq.data, cs.data, csum.data, crows.data, pq.data, ps.data, psum.data, cents.data, gb.data};
  }
  py::array_t<uint32_t> out(n);
  uint32_t* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cpu::assign_nearest(X.data, n, d, ct.data, n_groups, gp, panels.data, P, pcol.data, ids.data, nprobe, o,
                        num_threads, int8 ? &q8 : nullptr);
  }
  return out;
}

template <class Code>
py::tuple search_t(const py::object& Q_o, const py::object& S_o, const py::object& codes_o,
                   const py::object& packed_o, const py::object& offsets_o, const py::object& ivf_o,
                   const py::object& ivf_offsets_o, const py::object& centroids_o, const py::object& weights_o,
                   int nbits, const py::object& allowed_o, int64_t nprobe, double threshold, int64_t ndocs,
                   int64_t n_exact, int64_t k, int num_threads, const py::object& doc_cells_o,
                   const py::object& cell_codes_o, const py::object& kept_o, bool exact_int8,
                   const py::object& token_scales_o, const py::object& token_scales_done_o,
                   const py::object& candidates_o, int64_t max_list) {
  const char* fn = "search";
  const std::string f(fn);
  check_threads(fn, num_threads);
  const auto Q = view<float>(Q_o, fn, "Q", 3, "(nq, qlen, d)");
  const bool fused = S_o.is_none();  // scores computed inside, from the centroids
  const View<float> S = fused ? View<float>{nullptr, {}} : view<float>(S_o, fn, "S", 3, "(nq, qlen, nlist)");
  const auto ivf = view<int32_t>(ivf_o, fn, "ivf", 1, "(npairs,)");
  const auto ivf_offsets = view<int64_t>(ivf_offsets_o, fn, "ivf_offsets", 1, "(nlist + 1,)");
  const int64_t nq = Q[0], qlen = Q[1], d = Q[2];
  check_dim(fn, d);
  expect(qlen >= 1, f + ": queries need at least one token (Q.shape[1] >= 1)");
  const bool adc = !token_scales_o.is_none();
  CollectionArgs<Code> args;
  collection_args(fn, codes_o, packed_o, offsets_o, centroids_o, weights_o, nbits, allowed_o, d, args, adc);
  const int64_t nlist = args.col.nlist;
  expect(fused || (S[0] == nq && S[1] == qlen && S[2] == nlist),
         f + ": S must have shape (nq, qlen, nlist) = (" + std::to_string(nq) + ", " + std::to_string(qlen) +
             ", " + std::to_string(nlist) + "), got " + shape_str(S.shape));
  expect(ivf_offsets[0] == nlist + 1, f + ": ivf_offsets must have shape (nlist + 1,) = (" +
                                          std::to_string(nlist + 1) + ",), got " +
                                          shape_str(ivf_offsets.shape));
  expect(nprobe >= 1, f + ": nprobe must be >= 1, got " + std::to_string(nprobe));
  expect(ndocs >= 1, f + ": ndocs must be >= 1, got " + std::to_string(ndocs));
  expect(n_exact >= 1, f + ": n_exact must be >= 1, got " + std::to_string(n_exact));
  expect(k >= 1, f + ": k must be >= 1, got " + std::to_string(k));
  // Optional: (cells (npairs,) of the codes' dtype, cell_offsets i64 (ndocs + 1,)) from doc_cells, read by
  // the centroid interaction instead of the tokens' codes (same scores). Entries are checked where read.
  View<Code> cells{nullptr, {0}};
  View<int64_t> cell_offsets{nullptr, {0}};
  int64_t ncells = 0;
  if (!doc_cells_o.is_none()) {
    const py::tuple t = doc_cells_o.cast<py::tuple>();
    expect(t.size() == 2, f + ": doc_cells must be the (cells, cell_offsets) pair doc_cells returns");
    cells = view<Code>(t[0], fn, "doc_cells[0] (the dtype of codes)", 1, "(npairs,)");
    cell_offsets = view<int64_t>(t[1], fn, "doc_cells[1]", 1, "(ndocs + 1,)");
    ncells = cells[0];
    expect(cell_offsets[0] == args.col.ndocs + 1 && cell_offsets.data[0] == 0 &&
               cell_offsets.data[args.col.ndocs] == ncells,
           f + ": doc_cells does not belong to this collection (offsets must run from 0 to len(cells) over "
               "ndocs + 1 entries)");
  }
  // Optional: (codes int8 (nlist, d), scales f32 (nlist,), sums i32 (nlist,)) = quantize_rows(centroids):
  // quantised cell scores when S is None.
  View<int8_t> cq{nullptr, {0}};
  View<float> cs{nullptr, {0}};
  View<int32_t> csums{nullptr, {0}};
  if (!cell_codes_o.is_none()) {
    const py::tuple t = cell_codes_o.cast<py::tuple>();
    expect(t.size() == 3, f + ": cell_codes must be the (codes, scales, sums) triple quantize_rows(centroids) "
                              "returns");
    cq = view<int8_t>(t[0], fn, "cell_codes[0]", 2, "(nlist, d)");
    cs = view<float>(t[1], fn, "cell_codes[1]", 1, "(nlist,)");
    csums = view<int32_t>(t[2], fn, "cell_codes[2]", 1, "(nlist,)");
    expect(cq[0] == nlist && cq[1] == d && cs[0] == nlist && csums[0] == nlist,
           f + ": cell_codes must be quantize_rows(centroids): shapes (nlist, d) = (" + std::to_string(nlist) +
               ", " + std::to_string(d) + "), (nlist,) and (nlist,), got " + shape_str(cq.shape) + ", " +
               shape_str(cs.shape) + " and " + shape_str(csums.shape));
  }
  // Optional: every token's kept vector, step 5 scoring them.
  const KeptArgs kept = kept_args(kept_o, fn, args.col.n, d);
  expect(!exact_int8 || kept_o.is_none(),
         f + ": exact_int8 scores the decompressed candidates, kept scores them by their kept vectors: pass one "
             "or the other");
  // Optional: every token's inverse norm, float16 (n,) (token_scales): step 5 by lookup tables.
  const uint16_t* scales = nullptr;
  if (adc) {
    const View<uint16_t> sv = half_view(token_scales_o, fn, "token_scales", 1, "(n,)",
                                        f + ": token_scales must be a float16 array (n,): "
                                            "token_scales(...).astype(np.float16)");
    expect(sv[0] == args.col.n,
           f + ": token_scales must have shape (n,) = (" + std::to_string(args.col.n) + ",), one per token");
    expect(!exact_int8 && kept_o.is_none(),
           f + ": token_scales make step 5 score the candidates by lookup tables; exact_int8 and kept are other "
               "ways of scoring them: pass one of the three");
    scales = sv.data;
  }
  // Optional: the scales derived on demand (token_scales then written too), uint8 (ndocs,) flags.
  uint8_t* scales_done = nullptr;
  if (!token_scales_done_o.is_none()) {
    expect(adc, f + ": token_scales_done flags the documents whose token_scales are derived; give token_scales "
                    "(a writable float16 array (n,), zeros where not derived yet) with it");
    const auto done = view<uint8_t>(token_scales_done_o, fn, "token_scales_done", 1, "(ndocs,)");
    expect(done[0] == args.col.ndocs, f + ": token_scales_done must have shape (ndocs,) = (" +
                                          std::to_string(args.col.ndocs) + ",), one flag per document");
    const auto writable = [](const py::object& o) {
      return (py::reinterpret_borrow<py::array>(o).flags() & py::detail::npy_api::NPY_ARRAY_WRITEABLE_) != 0;
    };
    expect(writable(token_scales_o) && writable(token_scales_done_o),
           f + ": with token_scales_done the search writes token_scales and the flags: pass writable arrays");
    scales_done = const_cast<uint8_t*>(done.data);  // checked writable above
  }
  // Optional: steps 1-2's candidates, int64 (m,) distinct documents, ascending (checked in the search).
  cpu::Candidates given;
  if (!candidates_o.is_none()) {
    const auto cand = view<int64_t>(candidates_o, fn, "candidates", 1, "(m,)");
    given = cpu::Candidates{cand.data, cand[0]};
  }
  py::array_t<float> scores({nq, k});
  py::array_t<int64_t> docs({nq, k});
  float* so = mutable_data(scores);
  int64_t* dout = mutable_data(docs);
  {
    py::gil_scoped_release release;
    const cpu::IvfView<Code> iv{ivf.data, ivf[0], ivf_offsets.data, cells.data, cell_offsets.data, ncells};
    const cpu::SearchParams params{nprobe, threshold, ndocs, n_exact, k, exact_int8, max_list};
    cpu::search(Q.data, fused ? nullptr : S.data, nq, qlen, args.col, iv, args.allowed, params, so, dout, num_threads,
                cpu::Int8Rows{cq.data, cs.data, csums.data},
                kept.rows, scales, scales_done, given);
  }
  return py::make_tuple(scores, docs);
}

py::tuple search(const py::object& Q_o, const py::object& S_o, const py::object& codes_o,
                 const py::object& packed_o, const py::object& offsets_o, const py::object& ivf_o,
                 const py::object& ivf_offsets_o, const py::object& centroids_o, const py::object& weights_o,
                 int nbits, const py::object& allowed_o, int64_t nprobe, double threshold, int64_t ndocs,
                 int64_t n_exact, int64_t k, int num_threads, const py::object& doc_cells_o,
                 const py::object& cell_codes_o, const py::object& kept_o, bool exact_int8,
                 const py::object& token_scales_o, const py::object& token_scales_done_o,
                 const py::object& candidates_o, int64_t max_list) {
  expect(max_list >= 0, "search: max_list must be >= 0, got " + std::to_string(max_list));
  return with_code_type(codes_o, "search", "codes", [&](auto code) {
    return search_t<decltype(code)>(Q_o, S_o, codes_o, packed_o, offsets_o, ivf_o, ivf_offsets_o, centroids_o,
                                    weights_o, nbits, allowed_o, nprobe, threshold, ndocs, n_exact, k,
                                    num_threads, doc_cells_o, cell_codes_o, kept_o, exact_int8, token_scales_o,
                                    token_scales_done_o, candidates_o, max_list);
  });
}

template <class Code>
py::tuple exact_search_t(const py::object& Q_o, const py::object& codes_o, const py::object& packed_o,
                         const py::object& offsets_o, const py::object& centroids_o,
                         const py::object& weights_o, int nbits, const py::object& allowed_o, int64_t k,
                         int num_threads) {
  const char* fn = "exact_search";
  const std::string f(fn);
  check_threads(fn, num_threads);
  const auto Q = view<float>(Q_o, fn, "Q", 3, "(nq, qlen, d)");
  const int64_t nq = Q[0], qlen = Q[1], d = Q[2];
  check_dim(fn, d);
  expect(qlen >= 1, f + ": queries need at least one token (Q.shape[1] >= 1)");
  CollectionArgs<Code> args;
  collection_args(fn, codes_o, packed_o, offsets_o, centroids_o, weights_o, nbits, allowed_o, d, args);
  expect(k >= 1, f + ": k must be >= 1, got " + std::to_string(k));
  py::array_t<float> scores({nq, k});
  py::array_t<int64_t> docs({nq, k});
  float* so = mutable_data(scores);
  int64_t* dout = mutable_data(docs);
  {
    py::gil_scoped_release release;
    cpu::exact_search(Q.data, nq, qlen, args.col, args.allowed, k, so, dout, num_threads);
  }
  return py::make_tuple(scores, docs);
}

py::tuple exact_search(const py::object& Q_o, const py::object& codes_o, const py::object& packed_o,
                       const py::object& offsets_o, const py::object& centroids_o,
                       const py::object& weights_o, int nbits, const py::object& allowed_o, int64_t k,
                       int num_threads) {
  return with_code_type(codes_o, "exact_search", "codes", [&](auto code) {
    return exact_search_t<decltype(code)>(Q_o, codes_o, packed_o, offsets_o, centroids_o, weights_o, nbits,
                                          allowed_o, k, num_threads);
  });
}

py::dict build_info() {
  const cpu::BuildInfo info = cpu::build_info();
  py::dict d;
  d["kernels"] = "native";
  d["openmp"] = info.openmp;
  d["openmp_info"] = info.openmp_info;
  d["max_threads"] = info.max_threads;
  d["simd"] = info.simd;
  d["simd_dispatch"] = info.simd_dispatch;
  d["compiler"] = info.compiler;
  d["int8_vnni"] = cpu::vnni_kernels();
  d["adc_copy"] = cpu::adc_kernel_copy();
  d["int8_amx"] = cpu::amx_kernels();
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "plaidx native CPU kernels; the contract is the docstring of plaidx._kernels.";
  m.def("compress", &compress, py::arg("residuals"), py::arg("cutoffs"), py::arg("nbits"),
        "compress(residuals f32 (n, d), cutoffs f32 (d, 2**nbits - 1), nbits) -> packed u8 (n, d*nbits//8)");
  m.def("pq_encode", &pq_encode, py::arg("residuals"), py::arg("table"), py::arg("levels"), py::arg("nbits"),
        "pq_encode(residuals f32 (n, d), table f32 (pb, 256, dpb), levels f32 (16,), nbits 1/2/4) -> packed u8 (n, pb)");
  m.def("decompress", &decompress, py::arg("codes"), py::arg("packed"), py::arg("centroids"),
        py::arg("weights"), py::arg("nbits"), py::arg("normalize"),
        "decompress(codes u16 or u32 (n,), packed u8 (n, pb), centroids f32 (nlist, d), weights f32 (d, 2**nbits), "
        "nbits, normalize) -> f32 (n, d)");
  m.def("doc_cells", &doc_cells, py::arg("ivf"), py::arg("ivf_offsets"), py::arg("ndocs"), py::kw_only(),
        py::arg("num_threads") = 0,
        "doc_cells(ivf i32 (npairs,), ivf_offsets i64 (nlist+1,), ndocs, *, num_threads=0) -> (cells u16 or u32 "
        "(npairs,), cell_offsets i64 (ndocs+1,)): the inverted file transposed");
  m.def("build_ivf", &build_ivf, py::arg("codes"), py::arg("doc_offsets"), py::arg("nlist"), py::kw_only(),
        py::arg("num_threads") = 0,
        "build_ivf(codes u16 or u32 (n,), doc_offsets i64 (ndocs+1,), nlist, *, num_threads=0) -> (ivf i32 "
        "(npairs,), ivf_offsets i64 (nlist+1,))");
  m.def("maxsim", &maxsim, py::arg("Q"), py::arg("values"), py::arg("doc_offsets"), py::kw_only(),
        py::arg("num_threads") = 0,
        "maxsim(Q f32 (nq, qlen, d), values f32 (n, d), doc_offsets i64 (ndocs+1,), *, num_threads=0) "
        "-> f32 (nq, ndocs)");
  m.def("centroid_scores", &centroid_scores, py::arg("Q"), py::arg("centroids_t"), py::kw_only(),
        py::arg("num_threads") = 0,
        "centroid_scores(Q f32 (nq, qlen, d), centroids_t f32 (d, nlist), *, num_threads=0) "
        "-> S f32 (nq, qlen, nlist)");
  m.def("search", &search, py::arg("Q"), py::arg("S").none(true), py::arg("codes"), py::arg("packed"),
        py::arg("doc_offsets"), py::arg("ivf"), py::arg("ivf_offsets"), py::arg("centroids"),
        py::arg("weights"), py::arg("nbits"), py::arg("allowed"), py::arg("nprobe"), py::arg("threshold"),
        py::arg("ndocs"), py::arg("n_exact"), py::arg("k"), py::kw_only(), py::arg("num_threads") = 0,
        py::arg("doc_cells") = py::none(), py::arg("cell_codes") = py::none(), py::arg("kept") = py::none(),
        py::arg("exact_int8") = false, py::arg("token_scales") = py::none(), py::arg("token_scales_done") = py::none(),
        py::arg("candidates") = py::none(), py::arg("max_list") = 0,
        "PLAID search; see plaidx._kernels. -> (scores f32 (nq, k), docs i64 (nq, k))");
  m.def("token_scales", &token_scales, py::arg("codes"), py::arg("packed"), py::arg("centroids"), py::arg("weights"),
        py::arg("nbits"), py::kw_only(), py::arg("num_threads") = 0,
        "Each decoded token's inverse norm, 1 / max(|v|, 2**-14); see plaidx._kernels. -> f32 (n,)");
  m.def("assign_nearest", &assign_nearest, py::arg("X"), py::arg("coarse_t"), py::arg("n_groups"),
        py::arg("panels"), py::arg("pcol"), py::arg("ids"), py::arg("nprobe"), py::kw_only(),
        py::arg("num_threads") = 0, py::arg("int8") = py::none(),
        "assign_nearest(X f32 (n, d), coarse_t f32 (d, gp), n_groups, panels f32 (d * P,), pcol i64 (G+1,), "
        "ids u32 (P,), nprobe, *, num_threads=0, int8=None) -> codes u32 (n,); see plaidx.engine.kernels");
  m.def("kept_scores", &kept_scores, py::arg("Q"), py::arg("kept"), py::arg("doc_offsets"), py::arg("docs"),
        py::kw_only(), py::arg("num_threads") = 0,
        "Step 5's MaxSim over kept vectors of the listed documents; see plaidx._kernels. -> f32 (nq, m)");
  m.def("float16_bits", &float16_bits, py::arg("x"),
        "The float16 bits of each value, rounded to nearest, ties to even (the scales derived on demand). -> u16 (n,)");
  m.def("page_in_rows", &page_in_rows, py::arg("arrays"), py::arg("doc_offsets"), py::arg("docs"),
        "Ask the kernel to read in the rows of docs in each memory-mapped array where a sample is not resident "
        "(what the search does before step 5). -> the number of ranges advised (0: resident)");
  m.def("quantize_rows", &quantize_rows, py::arg("x"),
        "quantize_rows(x f32 (n, d)) -> (int8 (n, d), scales f32 (n,), row sums i32 (n,)); see plaidx._kernels.");
  m.def("exact_search", &exact_search, py::arg("Q"), py::arg("codes"), py::arg("packed"),
        py::arg("doc_offsets"), py::arg("centroids"), py::arg("weights"), py::arg("nbits"),
        py::arg("allowed"), py::arg("k"), py::kw_only(), py::arg("num_threads") = 0,
        "Exhaustive MaxSim over every allowed document; see plaidx._kernels. -> (scores, docs)");
  m.def("build_info", &build_info, "What this build has: OpenMP, threads, SIMD, compiler (CUDA: plaidx._cuda.device_info).");
}
