// validate.h: value checks on index arrays that are too large to scan while holding the GIL.
//
// Each throws std::invalid_argument with a message naming the array. O(length) reads, no writes.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace plaidx::cpu {

// offsets (count + 1,): offsets[0] == 0, offsets[count] == total, non-decreasing.
void check_offsets(const int64_t* offsets, int64_t count, int64_t total, const char* name);

}  // namespace plaidx::cpu
