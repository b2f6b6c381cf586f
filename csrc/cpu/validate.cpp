// validate.cpp: value checks on index arrays (see validate.h).
#include "cpu/validate.h"

#include <stdexcept>
#include <string>

namespace plaidx::cpu {

void check_offsets(const int64_t* offsets, int64_t count, int64_t total, const char* name) {
  if (offsets[0] != 0)
    throw std::invalid_argument(std::string(name) + "[0] must be 0, got " + std::to_string(offsets[0]));
  if (offsets[count] != total)
    throw std::invalid_argument(std::string(name) + "[-1] must equal " + std::to_string(total) + ", got " +
                                std::to_string(offsets[count]));
  // One branch-free pass (searches run it on every call), the position only on failure. The top bit of
  // o[i + 1] | (o[i + 1] - o[i]) is set when o[i + 1] is negative or, both being non-negative (no overflow),
  // smaller than o[i]; o[0] = 0, so a decrease anywhere sets it. Unsigned arithmetic, which SSE2 vectorises.
  uint64_t bits = 0;
  const auto* u = reinterpret_cast<const uint64_t*>(offsets);
  for (int64_t i = 0; i < count; ++i) bits |= u[i + 1] | (u[i + 1] - u[i]);
  if ((bits >> 63) == 0) return;
  for (int64_t i = 0; i < count; ++i)
    if (offsets[i + 1] < offsets[i])
      throw std::invalid_argument(std::string(name) + " must be non-decreasing; it decreases at position " +
                                  std::to_string(i + 1));
}

}  // namespace plaidx::cpu
