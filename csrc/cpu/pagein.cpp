// pagein.cpp: see pagein.h.
#include "cpu/pagein.h"

#include <algorithm>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#define PLAIDX_HAVE_MADVISE 1
#else
#define PLAIDX_HAVE_MADVISE 0
#endif

namespace plaidx::cpu {

#if PLAIDX_HAVE_MADVISE
namespace {

uintptr_t page_size() {
  static const uintptr_t size = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  return size;
}

// Whether the page holding addr is resident (an address mincore cannot answer for counts as resident).
bool resident(uintptr_t addr) {
  const uintptr_t page = addr & ~(page_size() - 1);
  unsigned char vec = 0;
  if (mincore(reinterpret_cast<void*>(page), page_size(), &vec) != 0) return true;
  return (vec & 1) != 0;
}

}  // namespace

int64_t page_in_rows(const TokenRows* arrays, int narrays, const int64_t* doc_offsets, const int64_t* docs,
                     int64_t count) {
  if (count <= 0 || narrays <= 0 || arrays[0].base == nullptr || arrays[0].row_bytes <= 0) return 0;
  // the sample: the first page of kPageInSample documents spread over the list, in the first array
  bool missing = false;
  const int64_t step = std::max<int64_t>(1, count / kPageInSample);
  const uintptr_t first = reinterpret_cast<uintptr_t>(arrays[0].base);
  for (int64_t i = 0; i < count && !missing; i += step) {
    const int64_t lo = doc_offsets[docs[i]], hi = doc_offsets[docs[i] + 1];
    missing = hi > lo && !resident(first + static_cast<uintptr_t>(lo * arrays[0].row_bytes));
  }
  if (!missing) return 0;
  const uintptr_t mask = ~(page_size() - 1);
  int64_t advised = 0;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  for (int a = 0; a < narrays; ++a) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(arrays[a].base);
    const int64_t rb = arrays[a].row_bytes;
    if (base == 0 || rb <= 0) continue;
    ranges.clear();
    for (int64_t i = 0; i < count; ++i) {
      const int64_t lo = doc_offsets[docs[i]], hi = doc_offsets[docs[i] + 1];
      if (hi > lo)
        ranges.emplace_back((base + static_cast<uintptr_t>(lo * rb)) & mask, base + static_cast<uintptr_t>(hi * rb));
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 0; i < ranges.size();) {
      uintptr_t lo = ranges[i].first, hi = ranges[i].second;
      for (++i; i < ranges.size() && ranges[i].first <= hi + kPageInGap; ++i) hi = std::max(hi, ranges[i].second);
      madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);  // advice only: errors ignored
      ++advised;
    }
  }
  return advised;
}

#else

int64_t page_in_rows(const TokenRows*, int, const int64_t*, const int64_t*, int64_t) { return 0; }

#endif

}  // namespace plaidx::cpu
