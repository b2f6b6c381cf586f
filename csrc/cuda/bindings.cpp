// bindings.cpp (CUDA): the pybind11 module plaidx._cuda over csrc/cuda/api.h.
//
// Arguments are checked exactly like plaidx._core's (py_arrays.h) while the GIL is held; the GIL is
// released around every upload, kernel and download. std::invalid_argument surfaces as ValueError and
// CUDA failures (no device, out of memory) as RuntimeError. Compiled by the host compiler: only
// kernels.cu needs nvcc.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>

#include "cuda/api.h"
#include "py_arrays.h"

namespace py = pybind11;
namespace cu = plaidx::cuda;
using namespace plaidx::py_arrays;  // NOLINT: the shared array checks

namespace {

void check_device(const char* fn, int device) {
  expect(device >= 0, std::string(fn) + ": device must be a CUDA device index >= 0, got " + std::to_string(device));
}

View<float> queries(const char* fn, const py::handle& Q_o, int64_t d) {
  const auto Q = view<float>(Q_o, fn, "Q", 3, "(nq, qlen, d)");
  expect(Q[1] >= 1, std::string(fn) + ": queries need at least one token (Q.shape[1] >= 1)");
  expect(Q[2] == d, std::string(fn) + ": Q must have d = " + std::to_string(d) + " columns, got shape " +
                        shape_str(Q.shape));
  return Q;
}

class Collection {
 public:
  Collection(const py::object& codes_o, const py::object& packed_o, const py::object& offsets_o,
             const py::object& centroids_o, const py::object& weights_o, int nbits, const py::object& ivf_o,
             const py::object& ivf_offsets_o, int device) {
    const char* fn = "Collection";
    check_device(fn, device);
    const auto centroids = view<float>(centroids_o, fn, "centroids", 2, "(nlist, d)");
    d_ = centroids[1];
    check_dim(fn, d_);
    const py::array_t<uint8_t> no_filter(0);
    const CollectionViews v =
        collection_views(fn, codes_o, packed_o, offsets_o, centroids_o, weights_o, nbits, no_filter, d_);
    ndocs_ = v.ndocs;
    const int32_t* ivf = nullptr;
    const int64_t* ivf_offsets = nullptr;
    int64_t npairs = 0;
    expect(ivf_o.is_none() == ivf_offsets_o.is_none(),
           std::string(fn) + ": pass both ivf and ivf_offsets, or neither (exact search only)");
    if (!ivf_o.is_none()) {
      const auto iv = view<int32_t>(ivf_o, fn, "ivf", 1, "(npairs,)");
      const auto io = view<int64_t>(ivf_offsets_o, fn, "ivf_offsets", 1, "(nlist + 1,)");
      expect(io[0] == v.nlist + 1, std::string(fn) + ": ivf_offsets must have shape (nlist + 1,) = (" +
                                       std::to_string(v.nlist + 1) + ",), got " + shape_str(io.shape));
      ivf = iv.data;
      ivf_offsets = io.data;
      npairs = iv[0];
    }
    py::gil_scoped_release release;
    impl_ = std::make_unique<cu::Collection>(v.codes, v.packed, v.n, v.doc_offsets, v.ndocs, v.centroids,
                                             v.nlist, d_, v.weights, nbits, ivf, npairs, ivf_offsets, device, v.table,
                                             v.levels);
  }

  py::tuple search(const py::object& Q_o, const py::object& allowed_o, int64_t nprobe, double threshold,
                   int64_t ndocs, int64_t n_exact, int64_t k, bool quantized, int64_t max_list) const {
    const char* fn = "Collection.search";
    const std::string f(fn);
    const auto Q = queries(fn, Q_o, d_);
    const uint8_t* allowed = allowed_ptr(fn, allowed_o);
    expect(nprobe >= 1, f + ": nprobe must be >= 1, got " + std::to_string(nprobe));
    expect(ndocs >= 1, f + ": ndocs must be >= 1, got " + std::to_string(ndocs));
    expect(n_exact >= 1, f + ": n_exact must be >= 1, got " + std::to_string(n_exact));
    expect(k >= 1, f + ": k must be >= 1, got " + std::to_string(k));
    expect(max_list >= 0, f + ": max_list must be >= 0, got " + std::to_string(max_list));
    py::array_t<float> scores({Q[0], k});
    py::array_t<int64_t> docs({Q[0], k});
    float* so = mutable_data(scores);
    int64_t* dout = mutable_data(docs);
    {
      py::gil_scoped_release release;
      impl_->search(Q.data, Q[0], Q[1], allowed,
                    cu::SearchParams{nprobe, threshold, ndocs, n_exact, k, quantized, max_list}, so, dout);
    }
    return py::make_tuple(scores, docs);
  }

  py::tuple exact_search(const py::object& Q_o, const py::object& allowed_o, int64_t k) const {
    const char* fn = "Collection.exact_search";
    const auto Q = queries(fn, Q_o, d_);
    const uint8_t* allowed = allowed_ptr(fn, allowed_o);
    expect(k >= 1, std::string(fn) + ": k must be >= 1, got " + std::to_string(k));
    py::array_t<float> scores({Q[0], k});
    py::array_t<int64_t> docs({Q[0], k});
    float* so = mutable_data(scores);
    int64_t* dout = mutable_data(docs);
    {
      py::gil_scoped_release release;
      impl_->exact_search(Q.data, Q[0], Q[1], allowed, k, so, dout);
    }
    return py::make_tuple(scores, docs);
  }

  int64_t device_bytes() const { return impl_->device_bytes(); }
  int device() const { return impl_->device(); }
  bool has_ivf() const { return impl_->has_ivf(); }

 private:
  const uint8_t* allowed_ptr(const char* fn, const py::handle& allowed_o) const {
    const auto a = view<uint8_t>(allowed_o, fn, "allowed", 1, "(ndocs,) or (0,)");
    expect(a[0] == ndocs_ || a[0] == 0, std::string(fn) + ": allowed must have shape (ndocs,) = (" +
                                            std::to_string(ndocs_) + ",) or (0,), got " + shape_str(a.shape));
    return a[0] == 0 ? nullptr : a.data;
  }

  std::unique_ptr<cu::Collection> impl_;
  int64_t d_ = 0, ndocs_ = 0;
};

py::array_t<float> decompress(const py::object& codes_o, const py::object& packed_o, const py::object& centroids_o,
                              const py::object& weights_o, int nbits, bool normalize, int device) {
  const char* fn = "decompress";
  check_device(fn, device);
  check_nbits(fn, nbits);
  const auto centroids = view<float>(centroids_o, fn, "centroids", 2, "(nlist, d)");
  const int64_t d = centroids[1];
  check_dim(fn, d);
  const auto codes = view<uint16_t>(codes_o, fn, "codes", 1, "(n,)");
  py::array_t<int64_t> one_doc(2);
  one_doc.mutable_at(0) = 0;
  one_doc.mutable_at(1) = codes[0];
  const py::array_t<uint8_t> no_filter(0);
  const CollectionViews v =
      collection_views(fn, codes_o, packed_o, one_doc, centroids_o, weights_o, nbits, no_filter, d);
  py::array_t<float> out({v.n, d});
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cu::decompress(v.codes, v.packed, v.n, v.centroids, v.nlist, d, v.weights, nbits, normalize, o, device, v.table,
                   v.levels);
  }
  return out;
}

py::array_t<float> maxsim(const py::object& Q_o, const py::object& values_o, const py::object& offsets_o,
                          int device) {
  const char* fn = "maxsim";
  check_device(fn, device);
  const auto values = view<float>(values_o, fn, "values", 2, "(n, d)");
  const auto offsets = view<int64_t>(offsets_o, fn, "doc_offsets", 1, "(ndocs + 1,)");
  const int64_t d = values[1];
  check_dim(fn, d);
  const auto Q = queries(fn, Q_o, d);
  expect(offsets[0] >= 1, std::string(fn) + ": doc_offsets must have ndocs + 1 >= 1 entries, got 0");
  const int64_t ndocs = offsets[0] - 1;
  py::array_t<float> out({Q[0], ndocs});
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cu::maxsim(Q.data, Q[0], Q[1], d, values.data, values[0], offsets.data, ndocs, o, device);
  }
  return out;
}

py::array_t<float> centroid_scores(const py::object& Q_o, const py::object& centroids_t_o, int device) {
  const char* fn = "centroid_scores";
  check_device(fn, device);
  const auto ct = view<float>(centroids_t_o, fn, "centroids_t", 2, "(d, nlist)");
  const int64_t d = ct[0], nlist = ct[1];
  check_dim(fn, d);
  const auto Q = queries(fn, Q_o, d);
  py::array_t<float> out({Q[0], Q[1], nlist});
  float* o = mutable_data(out);
  {
    py::gil_scoped_release release;
    cu::centroid_scores(Q.data, Q[0], Q[1], d, ct.data, nlist, o, device);
  }
  return out;
}

// ------------------------------------------------------------------------------------------ build
class KMeans {
 public:
  KMeans(const py::object& x_o, int device) {
    const char* fn = "KMeans";
    check_device(fn, device);
    const auto x = view<float>(x_o, fn, "x", 2, "(n, d)");
    check_dim(fn, x[1]);
    expect(x[0] >= 1, std::string(fn) + ": x needs at least one row");
    n_ = x[0];
    d_ = x[1];
    py::gil_scoped_release release;
    impl_ = std::make_unique<cu::KMeans>(x.data, n_, d_, device);
  }

  py::tuple assign(const py::object& centroids_o) {
    const auto c = centroids("KMeans.assign", centroids_o);
    py::array_t<int32_t> codes(n_);
    py::array_t<float> scores(n_);
    int32_t* co = mutable_data(codes);
    float* so = mutable_data(scores);
    {
      py::gil_scoped_release release;
      impl_->assign(c.data, c[0], co, so);
    }
    return py::make_tuple(codes, scores);
  }

  py::tuple update(int64_t nlist) {
    expect(nlist >= 1, "KMeans.update: nlist must be >= 1, got " + std::to_string(nlist));
    py::array_t<float> means({nlist, d_});
    py::array_t<float> counts(nlist);
    float* mo = mutable_data(means);
    float* co = mutable_data(counts);
    {
      py::gil_scoped_release release;
      impl_->update(nlist, mo, co);
    }
    return py::make_tuple(means, counts);
  }

  int64_t device_bytes() const { return impl_->device_bytes(); }

 private:
  View<float> centroids(const char* fn, const py::object& o) const {
    const auto c = view<float>(o, fn, "centroids", 2, "(nlist, d)");
    expect(c[1] == d_ && c[0] >= 1, std::string(fn) + ": centroids must have shape (nlist >= 1, d = " +
                                        std::to_string(d_) + "), got " + shape_str(c.shape));
    return c;
  }

  std::unique_ptr<cu::KMeans> impl_;
  int64_t n_ = 0, d_ = 0;
};

class Compressor {
 public:
  Compressor(const py::object& centroids_o, const py::object& cutoffs_o, int nbits, int64_t chunk_rows, int device) {
    const char* fn = "Compressor";
    check_device(fn, device);
    check_nbits(fn, nbits);
    const auto c = view<float>(centroids_o, fn, "centroids", 2, "(nlist, d)");
    d_ = c[1];
    nbits_ = nbits;
    check_dim(fn, d_);
    expect(c[0] >= 1 && c[0] <= 65536, std::string(fn) + ": nlist must be in [1, 65536], got " + std::to_string(c[0]));
    const auto cut = view<float>(cutoffs_o, fn, "cutoffs", 2, "(d, 2**nbits - 1)");
    expect(cut[0] == d_ && cut[1] == (int64_t{1} << nbits) - 1,
           std::string(fn) + ": cutoffs must have shape (d, 2**nbits - 1) = (" + std::to_string(d_) + ", " +
               std::to_string((1 << nbits) - 1) + "), got " + shape_str(cut.shape));
    expect(chunk_rows >= 1, std::string(fn) + ": chunk_rows must be >= 1, got " + std::to_string(chunk_rows));
    py::gil_scoped_release release;
    impl_ = std::make_unique<cu::Compressor>(c.data, c[0], d_, cut.data, nbits, chunk_rows, device);
  }

  // x: a host float32 (n, d) array.
  py::tuple compress(const py::object& x_o) {
    const auto x = view<float>(x_o, "Compressor.compress", "x", 2, "(n, d)");
    expect(x[1] == d_, "Compressor.compress: x must have d = " + std::to_string(d_) + " columns, got shape " +
                           shape_str(x.shape));
    return run(x.data, x[0], false);
  }

  // ptr: the address of a C-contiguous float32 (n, d) array in this object's GPU memory, written by
  // work that has finished (the caller synchronises its stream). Internal: plaidx.engine.gpu_build
  // checks dtype, shape, contiguity and device of the tensor it takes the address from.
  py::tuple compress_device(uintptr_t ptr, int64_t n) {
    expect(ptr != 0 && n >= 0, "Compressor.compress_device: needs a device address and n >= 0");
    return run(reinterpret_cast<const float*>(ptr), n, true);
  }

  int64_t device_bytes() const { return impl_->device_bytes(); }

 private:
  py::tuple run(const float* x, int64_t n, bool on_device) {
    py::array_t<uint16_t> codes(n);
    py::array_t<uint8_t> packed({n, d_ * nbits_ / 8});
    py::array_t<float> norms(n);
    uint16_t* co = mutable_data(codes);
    uint8_t* po = mutable_data(packed);
    float* no = mutable_data(norms);
    {
      py::gil_scoped_release release;
      impl_->compress(x, n, on_device, co, po, no);
    }
    return py::make_tuple(codes, packed, norms);
  }

  std::unique_ptr<cu::Compressor> impl_;
  int64_t d_ = 0;
  int nbits_ = 0;
};

py::tuple assign(const py::object& x_o, const py::object& centroids_o, int device) {
  const char* fn = "assign";
  check_device(fn, device);
  const auto x = view<float>(x_o, fn, "x", 2, "(n, d)");
  const auto c = view<float>(centroids_o, fn, "centroids", 2, "(nlist, d)");
  check_dim(fn, x[1]);
  expect(c[1] == x[1] && c[0] >= 1, std::string(fn) + ": centroids must have shape (nlist >= 1, d = " +
                                         std::to_string(x[1]) + "), got " + shape_str(c.shape));
  py::array_t<int32_t> codes(x[0]);
  py::array_t<float> scores(x[0]);
  int32_t* co = mutable_data(codes);
  float* so = mutable_data(scores);
  {
    py::gil_scoped_release release;
    cu::assign(x.data, x[0], x[1], c.data, c[0], co, so, device);
  }
  return py::make_tuple(codes, scores);
}

py::tuple compress_residuals(const py::object& x_o, const py::object& codes_o, const py::object& centroids_o,
                             const py::object& cutoffs_o, int nbits, int device) {
  const char* fn = "compress_residuals";
  check_device(fn, device);
  check_nbits(fn, nbits);
  const auto x = view<float>(x_o, fn, "x", 2, "(n, d)");
  const int64_t d = x[1];
  check_dim(fn, d);
  const auto codes = view<uint16_t>(codes_o, fn, "codes", 1, "(n,)");
  const auto c = view<float>(centroids_o, fn, "centroids", 2, "(nlist, d)");
  const auto cut = view<float>(cutoffs_o, fn, "cutoffs", 2, "(d, 2**nbits - 1)");
  expect(codes[0] == x[0], std::string(fn) + ": codes must have shape (n,) = (" + std::to_string(x[0]) + ",)");
  expect(c[1] == d && c[0] >= 1, std::string(fn) + ": centroids must have shape (nlist, d = " + std::to_string(d) +
                                     "), got " + shape_str(c.shape));
  expect(cut[0] == d && cut[1] == (int64_t{1} << nbits) - 1,
         std::string(fn) + ": cutoffs must have shape (d, 2**nbits - 1), got " + shape_str(cut.shape));
  py::array_t<uint8_t> packed({x[0], d * nbits / 8});
  py::array_t<float> norms(x[0]);
  uint8_t* po = mutable_data(packed);
  float* no = mutable_data(norms);
  {
    py::gil_scoped_release release;
    cu::compress_residuals(x.data, x[0], d, codes.data, c.data, c[0], cut.data, nbits, po, no, device);
  }
  return py::make_tuple(packed, norms);
}

py::dict device_info() {
  const cu::DeviceInfo info = cu::device_info();
  py::dict d;
  d["available"] = info.available;
  d["reason"] = info.reason;
  d["device_count"] = info.device_count;
  d["name"] = info.name;
  d["compute_capability"] = std::to_string(info.major) + "." + std::to_string(info.minor);
  d["total_memory"] = info.total_memory;
  d["runtime_version"] = info.runtime_version;
  d["driver_version"] = info.driver_version;
  d["compiled_archs"] = info.compiled_archs;
  return d;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "plaidx CUDA kernels: the GPU twins of plaidx._core (see csrc/cuda/api.h).";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("device_info", &device_info, "Whether a CUDA device is usable, which one, and the compiled archs.");
  m.def("decompress", &decompress, py::arg("codes"), py::arg("packed"), py::arg("centroids"), py::arg("weights"),
        py::arg("nbits"), py::arg("normalize"), py::kw_only(), py::arg("device") = 0,
        "decompress on the GPU; same contract as plaidx._core.decompress");
  m.def("maxsim", &maxsim, py::arg("Q"), py::arg("values"), py::arg("doc_offsets"), py::kw_only(),
        py::arg("device") = 0, "maxsim on the GPU; same contract as plaidx._core.maxsim");
  m.def("centroid_scores", &centroid_scores, py::arg("Q"), py::arg("centroids_t"), py::kw_only(),
        py::arg("device") = 0, "centroid_scores on the GPU; same contract as plaidx._core.centroid_scores");
  m.def("assign", &assign, py::arg("x"), py::arg("centroids"), py::kw_only(), py::arg("device") = 0,
        "Nearest centroid (max inner product, lowest id on ties) on the GPU -> (codes i32 (n,), scores f32 (n,))");
  m.def("compress_residuals", &compress_residuals, py::arg("x"), py::arg("codes"), py::arg("centroids"),
        py::arg("cutoffs"), py::arg("nbits"), py::kw_only(), py::arg("device") = 0,
        "Bucket and bit-pack the residuals x - centroids[codes] on the GPU -> (packed u8 (n, pb), norms f32 (n,))");
  py::class_<KMeans>(m, "KMeans", "k-means points kept on one GPU: assign, then update (see csrc/cuda/api.h)")
      .def(py::init<const py::object&, int>(), py::arg("x"), py::kw_only(), py::arg("device") = 0)
      .def("assign", &KMeans::assign, py::arg("centroids"), "-> (codes i32 (n,), scores f32 (n,))")
      .def("update", &KMeans::update, py::arg("nlist"),
           "means of the last assignment -> (means f32 (nlist, d), counts f32 (nlist,))")
      .def_property_readonly("device_bytes", &KMeans::device_bytes);
  py::class_<Compressor>(m, "Compressor", "A codec on one GPU: assign + compress batches, compressed bytes back")
      .def(py::init<const py::object&, const py::object&, int, int64_t, int>(), py::arg("centroids"),
           py::arg("cutoffs"), py::arg("nbits"), py::arg("chunk_rows") = int64_t{1} << 18, py::kw_only(),
           py::arg("device") = 0)
      .def("compress", &Compressor::compress, py::arg("x"), "-> (codes u16 (n,), packed u8 (n, pb), norms f32 (n,))")
      .def("compress_device", &Compressor::compress_device, py::arg("ptr"), py::arg("n"),
           "the same for a float32 (n, d) array already on this GPU (internal: see gpu_build)")
      .def_property_readonly("device_bytes", &Compressor::device_bytes);
  py::class_<Collection>(m, "Collection",
                         "A compressed collection (and optionally its inverted file) copied to one GPU.")
      .def(py::init<const py::object&, const py::object&, const py::object&, const py::object&, const py::object&,
                    int, const py::object&, const py::object&, int>(),
           py::arg("codes"), py::arg("packed"), py::arg("doc_offsets"), py::arg("centroids"), py::arg("weights"),
           py::arg("nbits"), py::arg("ivf") = py::none(), py::arg("ivf_offsets") = py::none(), py::kw_only(),
           py::arg("device") = 0)
      .def("search", &Collection::search, py::arg("Q"), py::arg("allowed"), py::arg("nprobe"),
           py::arg("threshold"), py::arg("ndocs"), py::arg("n_exact"), py::arg("k"), py::kw_only(),
           py::arg("quantized") = false, py::arg("max_list") = 0,
           "PLAID search on the GPU (steps 1-5 of plaidx._kernels; quantized: the cell scores of the CPU "
           "search with cell_codes; max_list: the CPU search's) -> (scores f32 (nq, k), docs i64 (nq, k))")
      .def("exact_search", &Collection::exact_search, py::arg("Q"), py::arg("allowed"), py::arg("k"),
           "Exhaustive exact MaxSim on the GPU -> (scores, docs)")
      .def_property_readonly("device_bytes", &Collection::device_bytes)
      .def_property_readonly("device", &Collection::device)
      .def_property_readonly("has_ivf", &Collection::has_ivf);
}
