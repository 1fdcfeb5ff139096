// Shared by hdas_tf's CPU kernels (each file says `using namespace hdas_common`): the TF names they use,
// 8- and 4-float vectors (GCC vector extensions: AVX/AVX2 registers with -march=native on x86, NEON or
// scalar code elsewhere), unaligned loads and stores, a parallel loop on the op's CPU thread pool, and
// block sums that do not depend on the thread count.

#ifndef HDAS_TF_CSRC_COMMON_H_
#define HDAS_TF_CSRC_COMMON_H_

#include <algorithm>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace hdas_common {

using int64 = long long;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;

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

// Sums over rows that do not depend on the thread count: rows [R b / B, R (b + 1) / B) of a fixed number of
// blocks B = min(R, blocks) go to their own float partial sums (in parallel), which are then added in block
// order in double precision. fn(row_begin, row_end, acc) adds its rows' contributions to acc ([width]).
template <typename Fn>
void BlockSums(tensorflow::OpKernelContext* ctx, int64 rows, int64 width, int64 cost_per_row, int64 blocks,
               std::vector<double>* out, Fn fn) {
  blocks = std::max<int64>(1, std::min<int64>(rows, blocks));
  std::vector<float> partial(blocks * width, 0.f);
  Parallel(ctx, blocks, cost_per_row * (rows / blocks + 1), [&](int64 begin, int64 end) {
    for (int64 b = begin; b < end; ++b) fn(rows * b / blocks, rows * (b + 1) / blocks, partial.data() + b * width);
  });
  out->assign(width, 0.0);
  for (int64 b = 0; b < blocks; ++b)
    for (int64 e = 0; e < width; ++e) (*out)[e] += partial[b * width + e];
}

}  // namespace hdas_common

#endif  // HDAS_TF_CSRC_COMMON_H_
