// topk.h: the ranking order shared by every top selection: score descending, then document ascending.
//
// A NaN score ranks like -inf, so the order is a strict total order on distinct documents whatever the
// scores are (std::nth_element stays well defined) and the selected set does not depend on how the
// input was partitioned. Functions take caller-owned buffers; no state.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace plaidx::cpu {

inline float rank_key(float s) { return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s; }

// True when (sa, da) ranks strictly before (sb, db).
inline bool ranks_before(float sa, int64_t da, float sb, int64_t db) {
  const float ka = rank_key(sa), kb = rank_key(sb);
  return ka > kb || (ka == kb && da < db);
}

struct Scored {
  float score;
  int64_t doc;
};

inline bool scored_before(const Scored& a, const Scored& b) {
  return ranks_before(a.score, a.doc, b.score, b.doc);
}

// Keeps the best m entries of items (unordered) and drops the rest. items: any order, distinct docs.
inline void keep_top(std::vector<Scored>& items, int64_t m) {
  if (m < 0) m = 0;
  if (static_cast<int64_t>(items.size()) <= m) return;
  std::nth_element(items.begin(), items.begin() + m, items.end(), scored_before);
  items.resize(static_cast<size_t>(m));
}

// Writes the best k entries of items in rank order to scores[0:k] / docs[0:k], padding with -inf / -1.
// Reorders items.
inline void write_top(std::vector<Scored>& items, int64_t k, float* scores, int64_t* docs) {
  keep_top(items, k);
  std::sort(items.begin(), items.end(), scored_before);
  const int64_t m = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < k; ++i) {
    scores[i] = i < m ? items[i].score : -std::numeric_limits<float>::infinity();
    docs[i] = i < m ? items[i].doc : -1;
  }
}

}  // namespace plaidx::cpu
