// Gradient of a k x k max pool for the CPU (NHWC, float32, square stride, symmetric padding `pad` whose cells
// never win: TF's 'SAME' at stride 1 for odd k, or 'VALID' with pad = 0), with TF's tie rule: each output's
// gradient goes to the first input of its window, in row-major order, equal to the output.
//
// Why: TF's MaxPoolGrad took 8-9x its forward pass on the CPU, ~10 % of a cell-search step on an AVX2 host
// (BUILD_NOTES "CPU kernels and their build"). Here each window is scanned once per vector of 8 channels: a mask of
// the channels not yet assigned picks the first tap equal to the output.
//
// Images are independent (a window never leaves its image), so they run in parallel without atomics.
//
// Written for hdas_tf from this definition.

#include <algorithm>
#include <cstring>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "common.h"

namespace hdas_pool {

using namespace hdas_common;  // NOLINT: the shared names of common.h

class MaxPoolGradOp : public OpKernel {
 public:
  explicit MaxPoolGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("ksize", &k_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stride", &s_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad", &pad_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& y = ctx->input(1);
    const Tensor& dy = ctx->input(2);
    OP_REQUIRES(ctx, x.dims() == 4, InvalidArgument("max pool gradient: the input must be NHWC, got ",
                                                    x.shape().DebugString()));
    const int64 N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    OP_REQUIRES(ctx, H + 2 * pad_ >= k_ && W + 2 * pad_ >= k_,
                InvalidArgument("max pool gradient: a ", k_, "x", k_, " window does not fit ", x.shape().DebugString(),
                                " padded by ", pad_));
    const int64 Ho = (H + 2 * pad_ - k_) / s_ + 1, Wo = (W + 2 * pad_ - k_) / s_ + 1;
    const TensorShape out_shape({N, Ho, Wo, C});
    OP_REQUIRES(ctx, y.shape() == out_shape && dy.shape() == out_shape,
                InvalidArgument("max pool gradient: the output and its gradient must be ", out_shape.DebugString(),
                                ", got ", y.shape().DebugString(), " and ", dy.shape().DebugString()));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    const float* xp = x.flat<float>().data();
    const float* yp = y.flat<float>().data();
    const float* gp = dy.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    hdas_common::Parallel(ctx, N, 4 * Ho * Wo * C * k_ * k_, [&](int64 b0, int64 b1) {
      std::fill(dxp + b0 * H * W * C, dxp + b1 * H * W * C, 0.f);
      for (int64 b = b0; b < b1; ++b) {
        const float* xi = xp + b * H * W * C;
        float* di = dxp + b * H * W * C;
        for (int64 i = 0; i < Ho; ++i) {
          const int64 p0 = std::max<int64>(0, i * s_ - pad_), p1 = std::min<int64>(H, i * s_ - pad_ + k_);
          for (int64 j = 0; j < Wo; ++j) {
            const int64 q0 = std::max<int64>(0, j * s_ - pad_), q1 = std::min<int64>(W, j * s_ - pad_ + k_);
            const int64 o = ((b * Ho + i) * Wo + j) * C;
            int64 c = 0;
            for (; c + 8 <= C; c += 8) {
              const v8 yv = Load(yp + o + c), gv = Load(gp + o + c);
              i8 taken = i8{};
              for (int64 p = p0; p < p1; ++p)
                for (int64 q = q0; q < q1; ++q) {
                  const int64 at = (p * W + q) * C + c;
                  const i8 hit = (Load(xi + at) == yv) & ~taken;
                  taken |= hit;
                  Store(di + at, Load(di + at) + (hit ? gv : v8{}));
                }
            }
            for (; c < C; ++c) {
              const float yc = yp[o + c];
              bool done = false;
              for (int64 p = p0; p < p1 && !done; ++p)
                for (int64 q = q0; q < q1 && !done; ++q)
                  if (xi[(p * W + q) * C + c] == yc) {
                    di[(p * W + q) * C + c] += gp[o + c];
                    done = true;
                  }
            }
          }
        }
      }
    });
  }

 private:
  int k_ = 3, s_ = 1, pad_ = 0;
};

}  // namespace hdas_pool

REGISTER_OP("HdasMaxPoolGrad")
    .Input("orig_input: float")
    .Input("orig_output: float")
    .Input("grad: float")
    .Output("output: float")
    .Attr("ksize: int >= 1")
    .Attr("stride: int >= 1 = 1")
    .Attr("pad: int >= 0 = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tensorflow::OkStatus();
    })
    .Doc("Gradient of a ksize x ksize max pool (TF's tie rule: the first maximum in row-major window order).");

REGISTER_KERNEL_BUILDER(Name("HdasMaxPoolGrad").Device(tensorflow::DEVICE_CPU), hdas_pool::MaxPoolGradOp);
