// parallel.h: the one OpenMP helper of the CPU kernels: a static-schedule parallel for that captures
// exceptions inside the region and rethrows the first one after it.
//
// Static partitioning plus kernels whose every output element is computed by one fixed sequence of
// operations make results independent of the thread count. Without OpenMP everything runs serially.
//
// Thread-safety: the callable runs concurrently on different indices; it must only write state that
// belongs to its index (or to its chunk). After the first exception the remaining indices are skipped.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace plaidx::cpu {

// Threads to use for a call: requested > 0 is taken as is, 0 means the OpenMP default
// (omp_get_max_threads(), i.e. OMP_NUM_THREADS or the core count); always 1 without OpenMP.
inline int resolve_threads(int requested) {
  if (requested < 0) throw std::invalid_argument("num_threads must be >= 0 (0 means the default)");
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

// How parallel_for hands out indices: kStatic, contiguous blocks (cheapest), or kDynamic, one index at
// a time to whichever thread is free (for uneven work, such as documents of different lengths). Each
// index writes only its own outputs either way, so results do not depend on the schedule.
enum class Schedule { kStatic, kDynamic };

// fn(i) for every i in [0, n), spread over nthreads threads.
template <class F>
void parallel_for(int64_t n, int nthreads, F&& fn, Schedule schedule = Schedule::kStatic) {
  if (n <= 0) return;
  if (nthreads <= 1 || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
#ifdef _OPENMP
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  const int nt = static_cast<int>(nthreads < n ? nthreads : n);
  auto guarded = [&](int64_t i) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  };
  if (schedule == Schedule::kDynamic) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t i = 0; i < n; ++i) guarded(i);
  } else {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < n; ++i) guarded(i);
  }
  if (error) std::rethrow_exception(error);
#else
  for (int64_t i = 0; i < n; ++i) fn(i);
#endif
}

// fn(begin, end) over [0, n) cut into ceil(n / grain) contiguous chunks, spread by `schedule`.
template <class F>
void parallel_chunks(int64_t n, int64_t grain, int nthreads, F&& fn, Schedule schedule = Schedule::kStatic) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t nchunks = (n + grain - 1) / grain;
  parallel_for(nchunks, nthreads, [&](int64_t c) {
    const int64_t begin = c * grain;
    const int64_t end = begin + grain < n ? begin + grain : n;
    fn(begin, end);
  }, schedule);
}

// Threads worth starting for `work` units when one thread should get at least `min_per_thread`
// (a parallel region costs microseconds, and much more on a busy machine): between 1 and nthreads.
inline int threads_for(int64_t work, int64_t min_per_thread, int nthreads) {
  const int64_t useful = work / (min_per_thread > 0 ? min_per_thread : 1);
  return static_cast<int>(useful < 1 ? 1 : useful < nthreads ? useful : nthreads);
}

// A grain that gives each of nthreads threads about `per_thread` chunks (for load balance).
inline int64_t grain_for(int64_t n, int nthreads, int64_t per_thread = 8) {
  const int64_t chunks = static_cast<int64_t>(nthreads > 1 ? nthreads : 1) * per_thread;
  const int64_t g = (n + chunks - 1) / chunks;
  return g > 0 ? g : 1;
}

}  // namespace plaidx::cpu
