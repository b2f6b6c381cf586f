// py_arrays.h: argument checks shared by the pybind11 modules (plaidx._core and plaidx._cuda).
//
// view<T>() accepts only a C-contiguous, aligned, native-endian numpy array of the right dtype and number
// of dimensions and raises TypeError (wrong type or dtype) or ValueError (shape, layout) with a message
// that says how to fix the call; nothing is converted or copied silently. Call with the GIL held.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace plaidx::py_arrays {

namespace py = pybind11;

template <typename T>
struct DtypeName;
template <>
struct DtypeName<float> {
  static constexpr const char* value = "float32";
};
template <>
struct DtypeName<int8_t> {
  static constexpr const char* value = "int8";
};
template <>
struct DtypeName<uint8_t> {
  static constexpr const char* value = "uint8";
};
template <>
struct DtypeName<uint16_t> {
  static constexpr const char* value = "uint16";
};
template <>
struct DtypeName<uint32_t> {
  static constexpr const char* value = "uint32";
};
template <>
struct DtypeName<int32_t> {
  static constexpr const char* value = "int32";
};
template <>
struct DtypeName<int64_t> {
  static constexpr const char* value = "int64";
};

template <typename T>
struct View {
  const T* data;
  std::vector<int64_t> shape;
  int64_t operator[](size_t i) const { return shape[i]; }
};

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// A read-only view of obj after checking it is a C-contiguous, aligned, native-endian T array of
// ndim dimensions. fn / name / dims name the call, the argument and its expected shape in messages.
template <typename T>
View<T> view(const py::handle& obj, const char* fn, const char* name, int ndim, const char* dims) {
  const char* dt = DtypeName<T>::value;
  const std::string what = std::string(fn) + ": " + name;
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(what + " must be a numpy.ndarray of " + dt + " " + dims + ", got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))) +
                         "; convert it with np.ascontiguousarray(" + name + ", dtype=np." + dt + ")");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!py::array_t<T>::check_(obj))
    throw py::type_error(what + " must be " + dt + " " + dims + ", got dtype " +
                         std::string(py::str(arr.dtype())) + "; convert it on purpose with " +
                         "np.ascontiguousarray(" + name + ", dtype=np." + dt + ")");
  std::vector<int64_t> shape(static_cast<size_t>(arr.ndim()));
  for (size_t i = 0; i < shape.size(); ++i)
    shape[i] = static_cast<int64_t>(arr.shape(static_cast<py::ssize_t>(i)));
  if (arr.ndim() != ndim)
    throw py::value_error(what + " must have shape " + dims + " (" + std::to_string(ndim) +
                          "-D), got shape " + shape_str(shape));
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(what + " must be C-contiguous; pass np.ascontiguousarray(" + name + ")");
  if (!(arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(what + " is not aligned to its dtype; pass np.require(" + name +
                          ", requirements='CA')");
  return View<T>{static_cast<const T*>(arr.data()), std::move(shape)};
}

inline void expect(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}

inline void check_nbits(const char* fn, int nbits) {
  expect(nbits == 1 || nbits == 2 || nbits == 4 || nbits == 8,
         std::string(fn) + ": nbits must be 1, 2, 4 or 8, got " + std::to_string(nbits));
}

inline void check_dim(const char* fn, int64_t d) {
  expect(d > 0 && d % 8 == 0,
         std::string(fn) + ": d must be a positive multiple of 8, got " + std::to_string(d));
}

inline void check_threads(const char* fn, int num_threads) {
  expect(num_threads >= 0, std::string(fn) + ": num_threads must be >= 0 (0 means the default), got " +
                               std::to_string(num_threads));
}

template <typename T>
T* mutable_data(py::array_t<T>& a) {
  return static_cast<T*>(a.mutable_data());
}

// The most centroids codes of type Code address: 65536 for uint16_t.
template <class Code>
constexpr int64_t max_nlist_for() {
  return int64_t{std::numeric_limits<Code>::max()} + 1;
}

// f(Code{}) with Code the centroid-id type of the array codes: uint32_t for uint32, else uint16_t (a
// non-array is left to view<uint16_t>, which names the expected type). Any other dtype raises TypeError.
// The one place a binding picks the code width; f must return the same type for both.
template <class F>
decltype(auto) with_code_type(const py::handle& codes, const char* fn, const char* name, F&& f) {
  if (py::isinstance<py::array>(codes)) {
    if (py::array_t<uint32_t>::check_(codes)) return f(uint32_t{});
    if (!py::array_t<uint16_t>::check_(codes))
      throw py::type_error(std::string(fn) + ": " + name + " must be uint16 (nlist <= 65536) or uint32 (n,), " +
                           "got dtype " + std::string(py::str(py::reinterpret_borrow<py::array>(codes).dtype())) +
                           "; convert it on purpose with np.ascontiguousarray(" + name + ", dtype=np.uint16)");
  }
  return f(uint16_t{});
}

// A float16 array as its IEEE binary16 bits (the kernels convert them): view<uint16_t> of obj once its dtype is
// checked to be float16 (not_half: the error otherwise, saying what to pass).
inline View<uint16_t> half_view(const py::handle& obj, const char* fn, const char* name, int ndim, const char* dims,
                                const std::string& not_half) {
  expect(py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype("float16")),
         not_half);
  return view<uint16_t>(obj.attr("view")("uint16"), fn, name, ndim, dims);
}

// A residual codebook as the kernels take it: per-dimension bucket weights f32 (d, 2**nbits), or (codec "pq")
// the pair (table f32 (pb, 256, dpb), levels f32 (16,) or None): one 256-entry codebook of dpb = 8 / nbits
// dimensions per packed byte, and the per-token residual scales picked by the high nibble of each token's
// last packed byte.
struct CodebookView {
  const float* weights = nullptr;  // (d, 2**nbits), or nullptr for a pq table
  const float* table = nullptr;    // (pb, 256, dpb), or nullptr
  const float* levels = nullptr;   // (16,), or nullptr
};

inline CodebookView codebook_view(const char* fn, const py::handle& weights_o, int64_t d, int nbits) {
  const std::string f(fn);
  CodebookView out;
  if (py::isinstance<py::tuple>(weights_o)) {
    const py::tuple t = py::reinterpret_borrow<py::tuple>(weights_o);
    expect(t.size() == 2, f + ": a pq codebook is the pair (table (pb, 256, dpb), levels (16,) or None)");
    const int64_t dpb = 8 / nbits, pb = d / dpb;
    const auto table = view<float>(t[0], fn, "weights[0]", 3, "(pb, 256, dpb)");
    expect(table[0] == pb && table[1] == 256 && table[2] == dpb,
           f + ": the pq table must have shape (d * nbits // 8, 256, 8 // nbits) = (" + std::to_string(pb) + ", 256, " +
               std::to_string(dpb) + "), got " + shape_str(table.shape));
    out.table = table.data;
    if (!t[1].is_none()) {
      const auto levels = view<float>(t[1], fn, "weights[1]", 1, "(16,)");
      expect(levels[0] == 16, f + ": the pq scale levels must have shape (16,), got " + shape_str(levels.shape));
      out.levels = levels.data;
    }
    return out;
  }
  const auto weights = view<float>(weights_o, fn, "weights", 2, "(d, 2**nbits)");
  expect(weights[0] == d && weights[1] == (int64_t{1} << nbits),
         f + ": weights must have shape (d, 2**nbits) = (" + std::to_string(d) + ", " + std::to_string(1 << nbits) +
             "), got " + shape_str(weights.shape));
  out.weights = weights.data;
  return out;
}

// A compressed collection's arrays, checked against each other (d, nbits given by the caller).
template <class Code>
struct CodedViews {
  const Code* codes;
  const uint8_t* packed;
  const int64_t* doc_offsets;
  const float* centroids;
  const float* weights;  // nullptr with a pq codebook (table, levels)
  const uint8_t* allowed;  // nullptr when the allowed array is empty (every document)
  int64_t n, ndocs, nlist;
  const float* table = nullptr;
  const float* levels = nullptr;
};
using CollectionViews = CodedViews<uint16_t>;

template <class Code = uint16_t>
CodedViews<Code> collection_views(const char* fn, const py::handle& codes_o, const py::handle& packed_o,
                                        const py::handle& offsets_o, const py::handle& centroids_o,
                                        const py::handle& weights_o, int nbits, const py::handle& allowed_o,
                                        int64_t d) {
  check_nbits(fn, nbits);
  const auto codes = view<Code>(codes_o, fn, "codes", 1, "(n,)");
  const auto packed = view<uint8_t>(packed_o, fn, "packed", 2, "(n, d * nbits // 8)");
  const auto offsets = view<int64_t>(offsets_o, fn, "doc_offsets", 1, "(ndocs + 1,)");
  const auto centroids = view<float>(centroids_o, fn, "centroids", 2, "(nlist, d)");
  const CodebookView book = codebook_view(fn, weights_o, d, nbits);
  const auto allowed = view<uint8_t>(allowed_o, fn, "allowed", 1, "(ndocs,) or (0,)");
  const int64_t n = codes[0], nlist = centroids[0], pb = d * nbits / 8;
  const std::string f(fn);
  expect(packed[0] == n && packed[1] == pb, f + ": packed must have shape (n, d * nbits // 8) = (" +
                                                std::to_string(n) + ", " + std::to_string(pb) + "), got " +
                                                shape_str(packed.shape));
  expect(offsets[0] >= 1, f + ": doc_offsets must have ndocs + 1 >= 1 entries, got 0");
  expect(centroids[1] == d, f + ": centroids must have shape (nlist, d) with d = " + std::to_string(d) +
                                ", got " + shape_str(centroids.shape));
  expect(nlist >= 1 && nlist <= max_nlist_for<Code>(),
         f + ": nlist (centroids.shape[0]) must be in [1, " + std::to_string(max_nlist_for<Code>()) + "] for " +
             DtypeName<Code>::value + " codes, got " + std::to_string(nlist) +
             (sizeof(Code) == 2 ? " (pass the codes as uint32 for more centroids)" : ""));
  const int64_t ndocs = offsets[0] - 1;
  expect(allowed[0] == ndocs || allowed[0] == 0, f + ": allowed must have shape (ndocs,) = (" +
                                                     std::to_string(ndocs) + ",) or (0,), got " +
                                                     shape_str(allowed.shape));
  return CodedViews<Code>{codes.data, packed.data, offsets.data, centroids.data, book.weights,
                         allowed[0] == 0 ? nullptr : allowed.data, n, ndocs, nlist, book.table, book.levels};
}

}  // namespace plaidx::py_arrays
