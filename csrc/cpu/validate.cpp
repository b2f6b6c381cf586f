// validate.cpp: value checks on index arrays (see validate.h).
#include "cpu/validate.h"

#include <stdexcept>
#include <string>

namespace plaidx::cpu {

void check_offsets(const int64_t* offsets, int64_t count, int64_t total, const char* name) {
  const std::string n(name);
  if (offsets[0] != 0) throw std::invalid_argument(n + "[0] must be 0, got " + std::to_string(offsets[0]));
  if (offsets[count] != total)
    throw std::invalid_argument(n + "[-1] must equal " + std::to_string(total) + ", got " +
                                std::to_string(offsets[count]));
  for (int64_t i = 0; i < count; ++i)
    if (offsets[i + 1] < offsets[i])
      throw std::invalid_argument(n + " must be non-decreasing; it decreases at position " +
                                  std::to_string(i + 1));
}

}  // namespace plaidx::cpu
