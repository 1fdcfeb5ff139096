// Shared by hdas_tf's CPU kernels: 8- and 4-float vectors (GCC vector extensions: AVX/AVX2 registers with
// -march=native on x86, NEON or scalar code elsewhere), unaligned loads and stores, and a parallel loop on
// the op's CPU thread pool.

#ifndef HDAS_TF_CSRC_COMMON_H_
#define HDAS_TF_CSRC_COMMON_H_

#include <cstring>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace hdas_common {

using int64 = long long;

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
typedef int i8 __attribute__((vector_size(32)));

template <typename V = v8>
inline V Load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V>
inline void Store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// fn(begin, end) over [0, total), split by TF's cost model over the op's intra-op threads.
template <typename Fn>
void Parallel(tensorflow::OpKernelContext* ctx, int64 total, int64 cost_per_unit, Fn fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, total, cost_per_unit, fn);
}

}  // namespace hdas_common

#endif  // HDAS_TF_CSRC_COMMON_H_
