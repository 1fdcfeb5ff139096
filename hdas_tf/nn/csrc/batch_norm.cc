// Training-mode batch normalisation for the CPU (NHWC or any [..., C] tensor, float32): the forward pass with
// the batch statistics and its gradient, as two TensorFlow ops shaped like FusedBatchNormV3 /
// FusedBatchNormGradV3 (is_training=True), with the same reserve-space meaning as TF's CPU kernels
// (reserve 1 = batch mean, reserve 2 = biased batch variance), so either gradient accepts either forward.
//
// Why: TF's CPU FusedBatchNorm kernels took 6-11x the time of a ReLU over the same tensor at the search supernets'
// shapes, a third of a cell-search step on an AVX2 host (BUILD_NOTES "CPU kernels and their build"). Here the
// forward pass is two sweeps (both moments, then normalise) and the backward pass two, each vectorised over the
// channels.
//
// With M = the number of rows (N*H*W), per channel c:
//   mean = sum_m x / M,  var = sum_m (x - mean)^2 / M,  r = 1 / sqrt(var + eps)
//   (both from sums of x - K and (x - K)^2 with K the first row: var = E[(x-K)^2] - E[x-K]^2)
//   y = scale r (x - mean) + offset;  unbiased variance = var M / (M - 1)
//   backward: doffset = sum dy,  dscale = r sum dy (x - mean),
//             dx = scale r (dy - doffset / M - (x - mean) r^2 sum dy (x - mean) / M)
// Per-channel sums are taken over fixed blocks of rows and the blocks added in a fixed order (in double;
// common.h BlockSums), so the result does not depend on the number of threads.
//
// Written for hdas_tf from these definitions.

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "common.h"

namespace hdas_bn {

using namespace hdas_common;  // NOLINT: the shared names of common.h
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

constexpr int64 kBlocks = 16;  // row blocks of the per-channel sums (common.h BlockSums)

tensorflow::Status CheckVector(const Tensor& t, int64 c, const char* what) {
  if (t.dims() == 1 && t.dim_size(0) == c) return tensorflow::OkStatus();
  return InvalidArgument("batch norm: ", what, " must be a vector of ", c, " channels, got ", t.shape().DebugString());
}

class ForwardOp : public OpKernel {
 public:
  explicit ForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& scale = ctx->input(1);
    const Tensor& offset = ctx->input(2);
    OP_REQUIRES(ctx, x.dims() >= 1, InvalidArgument("batch norm: the input must have a channel dimension"));
    const int64 C = x.dim_size(x.dims() - 1);
    const int64 M = C == 0 ? 0 : x.NumElements() / C;
    OP_REQUIRES_OK(ctx, CheckVector(scale, C, "scale"));
    OP_REQUIRES_OK(ctx, CheckVector(offset, C, "offset"));
    OP_REQUIRES(ctx, M > 0, InvalidArgument("batch norm: no rows to take batch statistics over: ",
                                            x.shape().DebugString()));
    Tensor *y, *mean_out, *var_out, *r1, *r2;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    for (int i = 1; i <= 4; ++i) {
      Tensor* t;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, TensorShape({C}), &t));
      (i == 1 ? mean_out : i == 2 ? var_out : i == 3 ? r1 : r2) = t;
    }
    const float* xp = x.flat<float>().data();
    // One sweep for both moments, shifted by the first row (K): sums of (x - K) and (x - K)^2 keep their
    // precision when K is near the mean, as a row of the batch is (the "shifted data" algorithm).
    const float* shift_row = xp;
    std::vector<double> sums;
    BlockSums(ctx, M, 2 * C, 4 * C, kBlocks, &sums, [&](int64 b, int64 e, float* acc) {
      float* __restrict s1 = acc;
      float* __restrict s2 = acc + C;
      const float* __restrict k = shift_row;
      for (int64 m = b; m < e; ++m) {
        const float* __restrict row = xp + m * C;
        for (int64 c = 0; c < C; ++c) {
          const float d = row[c] - k[c];
          s1[c] += d;
          s2[c] += d * d;
        }
      }
    });
    std::vector<float> mean(C), a(C), shift(C);
    std::vector<double> variance(C);
    for (int64 c = 0; c < C; ++c) {
      const double m1 = sums[c] / M;
      mean[c] = static_cast<float>(shift_row[c] + m1);
      variance[c] = std::max(0.0, sums[C + c] / M - m1 * m1);
    }
    const float* sp = scale.flat<float>().data();
    const float* op = offset.flat<float>().data();
    float* mp = mean_out->flat<float>().data();
    float* vp = var_out->flat<float>().data();
    float* r1p = r1->flat<float>().data();
    float* r2p = r2->flat<float>().data();
    for (int64 c = 0; c < C; ++c) {
      const double var = variance[c];
      const float r = static_cast<float>(1.0 / std::sqrt(var + epsilon_));
      mp[c] = r1p[c] = mean[c];
      r2p[c] = static_cast<float>(var);
      vp[c] = static_cast<float>(M > 1 ? var * M / (M - 1) : var);
      a[c] = sp[c] * r;
      shift[c] = op[c] - mean[c] * a[c];
    }
    float* yp = y->flat<float>().data();
    Parallel(ctx, M, 2 * C, [&](int64 b, int64 e) {
      const float* ap = a.data();
      const float* hp = shift.data();
      for (int64 m = b; m < e; ++m) {
        const float* row = xp + m * C;
        float* out = yp + m * C;
        for (int64 c = 0; c < C; ++c) out[c] = row[c] * ap[c] + hp[c];
      }
    });
  }

 private:
  float epsilon_ = 1e-3f;
};

class GradOp : public OpKernel {
 public:
  explicit GradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& scale = ctx->input(2);
    const Tensor& mean_in = ctx->input(3);
    const Tensor& var_in = ctx->input(4);
    OP_REQUIRES(ctx, x.dims() >= 1 && dy.shape() == x.shape(),
                InvalidArgument("batch norm gradient: the output gradient ", dy.shape().DebugString(),
                                " must have the input's shape ", x.shape().DebugString()));
    const int64 C = x.dim_size(x.dims() - 1);
    const int64 M = C == 0 ? 0 : x.NumElements() / C;
    OP_REQUIRES_OK(ctx, CheckVector(scale, C, "scale"));
    OP_REQUIRES_OK(ctx, CheckVector(mean_in, C, "the saved mean"));
    OP_REQUIRES_OK(ctx, CheckVector(var_in, C, "the saved variance"));
    OP_REQUIRES(ctx, M > 0, InvalidArgument("batch norm gradient: empty input ", x.shape().DebugString()));
    Tensor *dx, *dscale, *doffset;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({C}), &dscale));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({C}), &doffset));
    const float* xp = x.flat<float>().data();
    const float* gp = dy.flat<float>().data();
    const float* mu = mean_in.flat<float>().data();
    // Both sums in one sweep: [sum dy | sum dy (x - mean)].
    std::vector<double> sums;
    BlockSums(ctx, M, 2 * C, 4 * C, kBlocks, &sums, [&](int64 b, int64 e, float* acc) {
      float* __restrict s_dy = acc;
      float* __restrict s_dyx = acc + C;
      for (int64 m = b; m < e; ++m) {
        const float* row = xp + m * C;
        const float* g = gp + m * C;
        for (int64 c = 0; c < C; ++c) {
          s_dy[c] += g[c];
          s_dyx[c] += g[c] * (row[c] - mu[c]);
        }
      }
    });
    const float* sp = scale.flat<float>().data();
    const float* vp = var_in.flat<float>().data();
    float* dsp = dscale->flat<float>().data();
    float* dop = doffset->flat<float>().data();
    // dx = k_dy dy + k_x x + k_0 per channel.
    std::vector<float> k_dy(C), k_x(C), k_0(C);
    for (int64 c = 0; c < C; ++c) {
      const double r = 1.0 / std::sqrt(static_cast<double>(vp[c]) + epsilon_);
      dop[c] = static_cast<float>(sums[c]);
      dsp[c] = static_cast<float>(sums[C + c] * r);
      const double kd = sp[c] * r;
      const double kx = -kd * r * r * sums[C + c] / M;
      k_dy[c] = static_cast<float>(kd);
      k_x[c] = static_cast<float>(kx);
      k_0[c] = static_cast<float>(-kd * sums[c] / M - kx * mu[c]);
    }
    float* dxp = dx->flat<float>().data();
    Parallel(ctx, M, 3 * C, [&](int64 b, int64 e) {
      const float* kd = k_dy.data();
      const float* kx = k_x.data();
      const float* k0 = k_0.data();
      for (int64 m = b; m < e; ++m) {
        const float* row = xp + m * C;
        const float* g = gp + m * C;
        float* out = dxp + m * C;
        for (int64 c = 0; c < C; ++c) out[c] = kd[c] * g[c] + kx[c] * row[c] + k0[c];
      }
    });
  }

 private:
  float epsilon_ = 1e-3f;
};

tensorflow::Status ForwardShape(InferenceContext* c) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
  c->set_output(0, x);
  ShapeHandle vec = c->Vector(c->Dim(x, -1));
  for (int i = 1; i <= 4; ++i) c->set_output(i, vec);
  return tensorflow::OkStatus();
}

tensorflow::Status GradShape(InferenceContext* c) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(1), 1, &x));
  c->set_output(0, x);
  ShapeHandle vec = c->Vector(c->Dim(x, -1));
  c->set_output(1, vec);
  c->set_output(2, vec);
  return tensorflow::OkStatus();
}

}  // namespace hdas_bn

REGISTER_OP("HdasBatchNorm")
    .Input("x: float")
    .Input("scale: float")
    .Input("offset: float")
    .Output("y: float")
    .Output("batch_mean: float")
    .Output("batch_variance: float")
    .Output("reserve_space_1: float")
    .Output("reserve_space_2: float")
    .Attr("epsilon: float = 0.001")
    .SetShapeFn(hdas_bn::ForwardShape)
    .Doc("Training-mode batch norm over all but the last dimension; batch_variance is Bessel-corrected.");

REGISTER_OP("HdasBatchNormGrad")
    .Input("y_backprop: float")
    .Input("x: float")
    .Input("scale: float")
    .Input("reserve_space_1: float")
    .Input("reserve_space_2: float")
    .Output("x_backprop: float")
    .Output("scale_backprop: float")
    .Output("offset_backprop: float")
    .Attr("epsilon: float = 0.001")
    .SetShapeFn(hdas_bn::GradShape)
    .Doc("Gradient of HdasBatchNorm (or of FusedBatchNormV3 on the CPU, is_training=True).");

REGISTER_KERNEL_BUILDER(Name("HdasBatchNorm").Device(tensorflow::DEVICE_CPU), hdas_bn::ForwardOp);
REGISTER_KERNEL_BUILDER(Name("HdasBatchNormGrad").Device(tensorflow::DEVICE_CPU), hdas_bn::GradOp);
