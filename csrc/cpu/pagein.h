// pagein.h: asks the kernel to read in, all at once, the rows a search stage is about to read from
// memory-mapped index arrays.
//
// A cold memory map (an index just opened after a reboot, or one larger than the page cache) pages its
// rows in one fault at a time: step 5 reading 1,024 candidates' kept vectors from a map without read-ahead
// waits for some 4,000 reads in turn. madvise(MADV_WILLNEED) over the same pages queues them together.
// Whether to advise is decided by a sample (mincore on the first page of kPageInSample of the documents, in
// the first array): each check is a system call (about 1.5 us here, where one query at 1M tokens takes
// about 1 ms), and where every row is resident the advice would cost about 1 us a range for nothing. A list
// whose rows are partly resident may escape the sample: the rows it misses then fault in one by one.
// Advice only: no effect on any result; errors (an unmapped range, a platform without madvise) are ignored.
// Thread-safety: pure functions (system calls on the caller's mappings).
#pragma once

#include <cstdint>

namespace plaidx::cpu {

// One array of per-token rows: token t's row is the bytes [base + t * row_bytes, base + (t + 1) * row_bytes).
struct TokenRows {
  const void* base;
  int64_t row_bytes;
};

// Documents sampled for residency (evenly over the list).
constexpr int64_t kPageInSample = 8;
// Ranges closer than this are advised as one (fewer system calls for a little more reading).
constexpr int64_t kPageInGap = 16 << 10;

// Where the first array's first row of a sampled document is not resident: madvise(MADV_WILLNEED) over the
// pages of the rows of docs[0:count] in every array (document i owns tokens doc_offsets[i]:doc_offsets[i + 1]),
// near ranges merged. Returns the number of ranges advised (0: the sample resident, or no madvise here).
int64_t page_in_rows(const TokenRows* arrays, int narrays, const int64_t* doc_offsets, const int64_t* docs,
                     int64_t count);

}  // namespace plaidx::cpu
