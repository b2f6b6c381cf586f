// ivf.cpp: inverted file construction (see ivf.h).
#include "cpu/ivf.h"

#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/validate.h"

namespace plaidx::cpu {

template <class Code>
int64_t ivf_offsets(const Code* codes, int64_t n, const int64_t* doc_offsets, int64_t ndocs,
                    int64_t nlist, int64_t* ivf_offsets) {
  if (nlist < 1) throw std::invalid_argument("nlist must be >= 1");
  if (ndocs > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("build_ivf: more than 2**31 - 1 documents do not fit int32 ivf entries");
  check_offsets(doc_offsets, ndocs, n, "doc_offsets");
  // last[c]: the last document counted in cell c (documents are visited in ascending order).
  std::vector<int64_t> last(static_cast<size_t>(nlist), -1);
  for (int64_t c = 0; c <= nlist; ++c) ivf_offsets[c] = 0;
  for (int64_t i = 0; i < ndocs; ++i)
    for (int64_t t = doc_offsets[i]; t < doc_offsets[i + 1]; ++t) {
      const int64_t c = codes[t];
      if (c >= nlist)
        throw std::invalid_argument("codes: centroid id " + std::to_string(c) + " at token " +
                                    std::to_string(t) + " is >= nlist (" + std::to_string(nlist) + ")");
      if (last[c] != i) {
        last[c] = i;
        ++ivf_offsets[c + 1];
      }
    }
  for (int64_t c = 0; c < nlist; ++c) ivf_offsets[c + 1] += ivf_offsets[c];
  return ivf_offsets[nlist];
}

template <class Code>
void fill_ivf(const Code* codes, const int64_t* doc_offsets, int64_t ndocs, int64_t nlist,
              const int64_t* ivf_offsets, int32_t* ivf) {
  std::vector<int64_t> last(static_cast<size_t>(nlist), -1);
  std::vector<int64_t> cursor(ivf_offsets, ivf_offsets + nlist);
  for (int64_t i = 0; i < ndocs; ++i)
    for (int64_t t = doc_offsets[i]; t < doc_offsets[i + 1]; ++t) {
      const int64_t c = codes[t];  // validated by ivf_offsets()
      if (last[c] != i) {
        last[c] = i;
        ivf[cursor[c]++] = static_cast<int32_t>(i);
      }
    }
}

template <class Code>
void doc_cells(const int32_t* ivf, int64_t npairs, const int64_t* ivf_offsets, int64_t nlist, int64_t ndocs,
               int64_t* cell_offsets, Code* cells) {
  const int64_t max_nlist = int64_t{std::numeric_limits<Code>::max()} + 1;
  if (nlist < 1 || nlist > max_nlist)
    throw std::invalid_argument("nlist must be in [1, " + std::to_string(max_nlist) + "] for " +
                                std::to_string(8 * sizeof(Code)) + "-bit cells, got " + std::to_string(nlist));
  check_offsets(ivf_offsets, nlist, npairs, "ivf_offsets");
  for (int64_t i = 0; i <= ndocs; ++i) cell_offsets[i] = 0;
  for (int64_t e = 0; e < npairs; ++e) {
    const int64_t doc = ivf[e];
    if (doc < 0 || doc >= ndocs)
      throw std::invalid_argument("ivf: entry " + std::to_string(e) + " is document " + std::to_string(doc) +
                                  ", outside [0, ndocs)");
    ++cell_offsets[doc + 1];
  }
  for (int64_t i = 0; i < ndocs; ++i) cell_offsets[i + 1] += cell_offsets[i];
  std::vector<int64_t> cursor(cell_offsets, cell_offsets + ndocs);
  for (int64_t c = 0; c < nlist; ++c)
    for (int64_t e = ivf_offsets[c]; e < ivf_offsets[c + 1]; ++e) cells[cursor[ivf[e]]++] = static_cast<Code>(c);
}

#define PLAIDX_IVF_INSTANTIATE(Code)                                                                    \
  template int64_t ivf_offsets<Code>(const Code*, int64_t, const int64_t*, int64_t, int64_t, int64_t*);     \
  template void fill_ivf<Code>(const Code*, const int64_t*, int64_t, int64_t, const int64_t*, int32_t*);    \
  template void doc_cells<Code>(const int32_t*, int64_t, const int64_t*, int64_t, int64_t, int64_t*, Code*);
PLAIDX_IVF_INSTANTIATE(uint16_t)
PLAIDX_IVF_INSTANTIATE(uint32_t)
#undef PLAIDX_IVF_INSTANTIATE

}  // namespace plaidx::cpu
