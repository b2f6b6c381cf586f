// ivf.cpp: inverted file construction (see ivf.h).
#include "cpu/ivf.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/validate.h"

namespace plaidx::cpu {

namespace {

constexpr int64_t kMinPartWork = int64_t{1} << 20;  // tokens (or pairs) a part gets at least
constexpr int64_t kMaxPartBytes = int64_t{1} << 28;  // per-part arrays of a call, at most (doc_cells)

// The first index of each of nparts contiguous parts of [0, count) whose weights (offsets, ascending, count + 1
// entries) are about equal: parts[p]..parts[p + 1], parts[0] = 0, parts[nparts] = count.
std::vector<int64_t> even_parts(const int64_t* offsets, int64_t count, int nparts) {
  std::vector<int64_t> parts(static_cast<size_t>(nparts) + 1, count);
  parts[0] = 0;
  const int64_t total = offsets[count];
  for (int p = 1; p < nparts; ++p) {
    const int64_t target = total / nparts * p;
    parts[p] = std::max(parts[p - 1], static_cast<int64_t>(std::lower_bound(offsets, offsets + count, target) -
                                                           offsets));
  }
  return parts;
}

// counts[c] += the documents of [d0, d1) with a token in cell c; check: throw on a code >= nlist.
template <class Code>
void count_cells(const Code* codes, const int64_t* doc_offsets, int64_t d0, int64_t d1, int64_t nlist,
                 int64_t* counts, bool check) {
  std::vector<int64_t> last(static_cast<size_t>(nlist), -1);  // the last document counted in each cell
  for (int64_t i = d0; i < d1; ++i)
    for (int64_t t = doc_offsets[i]; t < doc_offsets[i + 1]; ++t) {
      const int64_t c = codes[t];
      if (check && c >= nlist)
        throw std::invalid_argument("codes: centroid id " + std::to_string(c) + " at token " + std::to_string(t) +
                                    " is >= nlist (" + std::to_string(nlist) + ")");
      if (last[c] != i) {
        last[c] = i;
        ++counts[c];
      }
    }
}

// Parts of the documents for a call over n tokens and its per-part cell counts (nparts x nlist).
template <class Code>
std::vector<int64_t> part_counts(const Code* codes, const int64_t* doc_offsets, const std::vector<int64_t>& parts,
                                 int64_t nlist, bool check) {
  const int nparts = static_cast<int>(parts.size()) - 1;
  std::vector<int64_t> counts(static_cast<size_t>(nparts * nlist), 0);
  parallel_for(nparts, nparts, [&](int64_t p) {
    count_cells(codes, doc_offsets, parts[p], parts[p + 1], nlist, counts.data() + p * nlist, check);
  });
  return counts;
}

// offsets (width + 1,): the running totals over j of the parts' counts at j (counts nparts x width, part by part).
void totals_to_offsets(const std::vector<int64_t>& counts, int64_t nparts, int64_t width, int64_t* offsets) {
  offsets[0] = 0;
  for (int64_t j = 0; j < width; ++j) {
    int64_t sum = 0;
    for (int64_t p = 0; p < nparts; ++p) sum += counts[p * width + j];
    offsets[j + 1] = offsets[j] + sum;
  }
}

// Per-part counts (nparts x width, part by part) turned into cursors in place: entry (p, j) becomes offsets[j]
// plus the counts of the parts before p at j, so that each part writes after the earlier ones.
void counts_to_cursors(std::vector<int64_t>& counts, int64_t nparts, int64_t width, const int64_t* offsets) {
  for (int64_t j = 0; j < width; ++j) {
    int64_t at = offsets[j];
    for (int64_t p = 0; p < nparts; ++p) {
      const int64_t count = counts[p * width + j];
      counts[p * width + j] = at;
      at += count;
    }
  }
}

int ivf_parts(int64_t n, int64_t ndocs, int num_threads) {
  return static_cast<int>(std::min<int64_t>(threads_for(n, kMinPartWork, resolve_threads(num_threads)),
                                            std::max<int64_t>(ndocs, 1)));
}

}  // namespace

template <class Code>
int64_t ivf_offsets(const Code* codes, int64_t n, const int64_t* doc_offsets, int64_t ndocs,
                    int64_t nlist, int64_t* ivf_offsets, int num_threads, IvfParts* keep) {
  if (nlist < 1) throw std::invalid_argument("nlist must be >= 1");
  if (ndocs > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("build_ivf: more than 2**31 - 1 documents do not fit int32 ivf entries");
  check_offsets(doc_offsets, ndocs, n, "doc_offsets");
  std::vector<int64_t> parts = even_parts(doc_offsets, ndocs, ivf_parts(n, ndocs, num_threads));
  std::vector<int64_t> counts = part_counts(codes, doc_offsets, parts, nlist, true);
  const int64_t nparts = static_cast<int64_t>(parts.size()) - 1;
  totals_to_offsets(counts, nparts, nlist, ivf_offsets);
  if (keep != nullptr) {
    keep->parts = std::move(parts);
    keep->counts = std::move(counts);
  }
  return ivf_offsets[nlist];
}

template <class Code>
void fill_ivf(const Code* codes, const int64_t* doc_offsets, int64_t ndocs, int64_t nlist,
              const int64_t* ivf_offsets, int32_t* ivf, int num_threads, IvfParts* counted) {
  // Each part writes its documents at its own cursors: after the earlier parts' documents in every cell, so
  // each list stays ascending.
  std::vector<int64_t> parts, cursor;
  if (counted != nullptr && !counted->parts.empty()) {
    parts = std::move(counted->parts);
    cursor = std::move(counted->counts);
  } else {
    parts = even_parts(doc_offsets, ndocs, ivf_parts(doc_offsets[ndocs], ndocs, num_threads));
    cursor = part_counts(codes, doc_offsets, parts, nlist, false);  // codes validated by ivf_offsets
  }
  const int64_t nparts = static_cast<int64_t>(parts.size()) - 1;
  counts_to_cursors(cursor, nparts, nlist, ivf_offsets);
  parallel_for(nparts, static_cast<int>(nparts), [&](int64_t p) {
    int64_t* cur = cursor.data() + p * nlist;
    std::vector<int64_t> last(static_cast<size_t>(nlist), -1);
    for (int64_t i = parts[p]; i < parts[p + 1]; ++i)
      for (int64_t t = doc_offsets[i]; t < doc_offsets[i + 1]; ++t) {
        const int64_t c = codes[t];
        if (last[c] != i) {
          last[c] = i;
          ivf[cur[c]++] = static_cast<int32_t>(i);
        }
      }
  });
}

template <class Code>
void doc_cells(const int32_t* ivf, int64_t npairs, const int64_t* ivf_offsets, int64_t nlist, int64_t ndocs,
               int64_t* cell_offsets, Code* cells, int num_threads) {
  const int64_t max_nlist = int64_t{std::numeric_limits<Code>::max()} + 1;
  if (nlist < 1 || nlist > max_nlist)
    throw std::invalid_argument("nlist must be in [1, " + std::to_string(max_nlist) + "] for " +
                                std::to_string(8 * sizeof(Code)) + "-bit cells, got " + std::to_string(nlist));
  check_offsets(ivf_offsets, nlist, npairs, "ivf_offsets");
  // Parts of the cells, each with a cursor per document (after the earlier parts' cells of that document, so
  // each document's cells stay ascending); as many parts as the per-part arrays' bound allows.
  const int64_t by_memory = std::max<int64_t>(1, kMaxPartBytes / (8 * std::max<int64_t>(ndocs, 1)));
  const int nparts = static_cast<int>(std::min<int64_t>(
      {threads_for(npairs, kMinPartWork, resolve_threads(num_threads)), by_memory, nlist}));
  const std::vector<int64_t> parts = even_parts(ivf_offsets, nlist, nparts);
  std::vector<int64_t> cursor(static_cast<size_t>(nparts * ndocs), 0);
  parallel_for(nparts, nparts, [&](int64_t p) {
    int64_t* count = cursor.data() + p * ndocs;
    for (int64_t e = ivf_offsets[parts[p]]; e < ivf_offsets[parts[p + 1]]; ++e) {
      const int64_t doc = ivf[e];
      if (doc < 0 || doc >= ndocs)
        throw std::invalid_argument("ivf: entry " + std::to_string(e) + " is document " + std::to_string(doc) +
                                    ", outside [0, ndocs)");
      ++count[doc];
    }
  });
  totals_to_offsets(cursor, nparts, ndocs, cell_offsets);
  counts_to_cursors(cursor, nparts, ndocs, cell_offsets);
  parallel_for(nparts, nparts, [&](int64_t p) {
    int64_t* cur = cursor.data() + p * ndocs;
    for (int64_t c = parts[p]; c < parts[p + 1]; ++c)
      for (int64_t e = ivf_offsets[c]; e < ivf_offsets[c + 1]; ++e) cells[cur[ivf[e]]++] = static_cast<Code>(c);
  });
}

#define PLAIDX_IVF_INSTANTIATE(Code)                                                                         \
  template int64_t ivf_offsets<Code>(const Code*, int64_t, const int64_t*, int64_t, int64_t, int64_t*, int,     \
                                     IvfParts*);                                                              \
  template void fill_ivf<Code>(const Code*, const int64_t*, int64_t, int64_t, const int64_t*, int32_t*, int,    \
                               IvfParts*);                                                                    \
  template void doc_cells<Code>(const int32_t*, int64_t, const int64_t*, int64_t, int64_t, int64_t*, Code*, int);
PLAIDX_IVF_INSTANTIATE(uint16_t)
PLAIDX_IVF_INSTANTIATE(uint32_t)
#undef PLAIDX_IVF_INSTANTIATE

}  // namespace plaidx::cpu
