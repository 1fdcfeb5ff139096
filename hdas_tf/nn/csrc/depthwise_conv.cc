// Depthwise 2-D convolution for the CPU (NHWC, float32, [k, k, C, 1] filters, symmetric zero padding `pad`,
// square stride): the forward pass and both gradients, as three TensorFlow ops.
//
// Why: on AVX2 hosts TF's own DepthwiseConv2dNative CPU kernel ran 3.5-6.4x slower than PyTorch's at the cell
// supernet's shapes (C = 16..64), and depthwise convolutions are most of a search step there (BUILD_NOTES
// "CPU kernels and their build"). These kernels keep the channels innermost and vectorise over them (8 floats
// per vector, 1-4 vectors per pass), so a pixel's k*k taps accumulate in registers.
//
// Definitions (H, W input size; Ho = (H + 2 pad - k) / stride + 1, likewise Wo):
//   y[n, i, j, c]  = sum_{u,v} x[n, i*s - pad + u, j*s - pad + v, c] * f[u, v, c]      (x is 0 outside)
//   dx[n, p, q, c] = sum over (u, v, i, j) with i*s - pad + u = p, j*s - pad + v = q of dy[n, i, j, c] f[u, v, c]
//   df[u, v, c]    = sum_{n,i,j} x[n, i*s - pad + u, j*s - pad + v, c] * dy[n, i, j, c]
// The filter gradient sums fixed blocks of rows into partial sums added in a fixed order, so its result does
// not depend on the number of threads or their scheduling.
//
// Written for hdas_tf from these definitions.

#include <algorithm>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "common.h"

namespace hdas {

using namespace hdas_common;  // NOLINT: the shared names of common.h
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

struct Geometry {
  int64 n, h, w, c, ho, wo;
  int k, s, pad;
  int64 XIndex(int64 b, int64 i, int64 j) const { return ((b * h + i) * w + j) * c; }
  int64 YIndex(int64 b, int64 i, int64 j) const { return ((b * ho + i) * wo + j) * c; }
};

int64 OutSize(int64 in, int k, int s, int pad) { return (in + 2 * pad - k) / s + 1; }

// One output position for NV vectors of channels from `c0`: sum over the taps (x_off[t], f_off[t]).
template <int NV>
inline void Taps(const float* x, const float* f, const int64* x_off, const int64* f_off, int taps, int64 c0,
                 float* out) {
  v8 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = v8{};
  for (int t = 0; t < taps; ++t) {
    const float* xp = x + x_off[t] + c0;
    const float* fp = f + f_off[t] + c0;
    for (int v = 0; v < NV; ++v) acc[v] += Load(xp + 8 * v) * Load(fp + 8 * v);
  }
  for (int v = 0; v < NV; ++v) Store(out + c0 + 8 * v, acc[v]);
}

// out[c] = sum_t x[x_off[t] + c] * f[f_off[t] + c] for channels c in [c_begin, C): 32, 16, 8 at a time, then
// one by one. The general path, for output columns whose window leaves the input (or the channel remainder).
inline void Pixel(const float* x, const float* f, const int64* x_off, const int64* f_off, int taps, int64 c_begin,
                  int64 C, float* out) {
  int64 c = c_begin;
  for (; c + 32 <= C; c += 32) Taps<4>(x, f, x_off, f_off, taps, c, out);
  for (; c + 16 <= C; c += 16) Taps<2>(x, f, x_off, f_off, taps, c, out);
  for (; c + 8 <= C; c += 8) Taps<1>(x, f, x_off, f_off, taps, c, out);
  for (; c < C; ++c) {
    float acc = 0.f;
    for (int t = 0; t < taps; ++t) acc += x[x_off[t] + c] * f[f_off[t] + c];
    out[c] = acc;
  }
}

// J adjacent interior output columns from j, NV channel vectors (V: 8 or 4 floats) from c0: every tap's filter
// vectors are loaded once and used J times, and the J x NV sums stay in registers. Rows u in [u0, u1) are
// inside the input.
template <typename V, int NV, int J>
inline void Strip(const Geometry& g, const float* x_img, const float* f, int64 i, int u0, int u1, int64 j, int64 c0,
                  float* y_row) {
  constexpr int L = sizeof(V) / sizeof(float);
  const int64 C = g.c;
  V acc[J][NV];
  for (int jj = 0; jj < J; ++jj)
    for (int v = 0; v < NV; ++v) acc[jj][v] = V{};
  for (int u = u0; u < u1; ++u) {
    const float* xr = x_img + ((i * g.s - g.pad + u) * g.w + j * g.s - g.pad) * C + c0;
    const float* fr = f + u * g.k * C + c0;
    for (int v = 0; v < g.k; ++v) {
      V fv[NV];
      for (int n = 0; n < NV; ++n) fv[n] = Load<V>(fr + v * C + L * n);
      for (int jj = 0; jj < J; ++jj) {
        const float* xp = xr + (jj * g.s + v) * C;
        for (int n = 0; n < NV; ++n) acc[jj][n] += Load<V>(xp + L * n) * fv[n];
      }
    }
  }
  for (int jj = 0; jj < J; ++jj)
    for (int n = 0; n < NV; ++n) Store(y_row + (j + jj) * C + c0 + L * n, acc[jj][n]);
}

// Interior columns [j0, j1) for NV channel vectors of type V from c0, J = 8 / NV columns at a time.
template <typename V, int NV>
inline void Interior(const Geometry& g, const float* x_img, const float* f, int64 i, int u0, int u1, int64 j0,
                     int64 j1, int64 c0, float* y_row) {
  constexpr int J = 8 / NV;
  int64 j = j0;
  for (; j + J <= j1; j += J) Strip<V, NV, J>(g, x_img, f, i, u0, u1, j, c0, y_row);
  for (; j < j1; ++j) Strip<V, NV, 1>(g, x_img, f, i, u0, u1, j, c0, y_row);
}

// Forward pass of output rows [begin, end) (row = b * Ho + i).
void ForwardRows(const Geometry& g, const float* x, const float* f, float* y, int64 begin, int64 end) {
  std::vector<int64> x_off(g.k * g.k), f_off(g.k * g.k);
  const int64 C = g.c, C4 = C - C % 4;
  // Interior columns: every tap v in [0, k) reads inside the row, 0 <= j s - pad and j s - pad + k - 1 < W.
  const int64 j_lo = std::min<int64>(g.wo, (g.pad + g.s - 1) / g.s);
  const int64 j_hi = std::max<int64>(j_lo, std::min<int64>(g.wo, (g.w + g.pad - g.k) / g.s + 1));
  for (int64 r = begin; r < end; ++r) {
    const int64 b = r / g.ho, i = r % g.ho;
    const int u0 = static_cast<int>(std::max<int64>(0, g.pad - i * g.s));
    const int u1 = static_cast<int>(std::min<int64>(g.k, g.h + g.pad - i * g.s));
    float* y_row = y + g.YIndex(b, i, 0);
    const float* x_img = x + g.XIndex(b, 0, 0);
    auto general = [&](int64 j, int64 c_begin) {
      int taps = 0;
      for (int u = u0; u < u1; ++u) {
        const int64 p = i * g.s - g.pad + u;
        for (int v = 0; v < g.k; ++v) {
          const int64 q = j * g.s - g.pad + v;
          if (q < 0 || q >= g.w) continue;
          x_off[taps] = g.XIndex(b, p, q);
          f_off[taps] = (u * g.k + v) * C;
          ++taps;
        }
      }
      Pixel(x, f, x_off.data(), f_off.data(), taps, c_begin, C, y_row + j * C);
    };
    for (int64 j = 0; j < j_lo; ++j) general(j, 0);
    for (int64 j = j_hi; j < g.wo; ++j) general(j, 0);
    if (u1 <= u0) {  // no row of the window inside the input (only with pad >= k): zeros
      for (int64 j = j_lo; j < j_hi; ++j) std::fill(y_row + j * C, y_row + (j + 1) * C, 0.f);
      continue;
    }
    int64 c = 0;
    for (; c + 32 <= C; c += 32) Interior<v8, 4>(g, x_img, f, i, u0, u1, j_lo, j_hi, c, y_row);
    for (; c + 16 <= C; c += 16) Interior<v8, 2>(g, x_img, f, i, u0, u1, j_lo, j_hi, c, y_row);
    for (; c + 8 <= C; c += 8) Interior<v8, 1>(g, x_img, f, i, u0, u1, j_lo, j_hi, c, y_row);
    for (; c + 4 <= C; c += 4) Interior<v4, 1>(g, x_img, f, i, u0, u1, j_lo, j_hi, c, y_row);
    if (C4 < C)
      for (int64 j = j_lo; j < j_hi; ++j) general(j, C4);
  }
}

// Input gradient of input rows [begin, end) (row = b * H + p): a gather over the outputs that read (p, q).
void InputGradRows(const Geometry& g, const float* dy, const float* f, float* dx, int64 begin, int64 end) {
  std::vector<int64> y_off(g.k * g.k), f_off(g.k * g.k);
  for (int64 r = begin; r < end; ++r) {
    const int64 b = r / g.h, p = r % g.h;
    for (int64 q = 0; q < g.w; ++q) {
      int taps = 0;
      for (int u = 0; u < g.k; ++u) {
        const int64 ti = p + g.pad - u;  // = i * s
        if (ti < 0 || ti % g.s != 0 || ti / g.s >= g.ho) continue;
        for (int v = 0; v < g.k; ++v) {
          const int64 tj = q + g.pad - v;
          if (tj < 0 || tj % g.s != 0 || tj / g.s >= g.wo) continue;
          y_off[taps] = g.YIndex(b, ti / g.s, tj / g.s);
          f_off[taps] = (u * g.k + v) * g.c;
          ++taps;
        }
      }
      Pixel(dy, f, y_off.data(), f_off.data(), taps, 0, g.c, dx + g.XIndex(b, p, q));
    }
  }
}

// acc[c0 .. c0 + 8 NV) += sum_{j < count} x[j x_step + c] * dy[j C + c].
template <int NV>
inline void RowDot(const float* x, const float* dy, int64 x_step, int64 C, int64 count, int64 c0, float* acc_out) {
  v8 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = Load(acc_out + c0 + 8 * v);
  for (int64 j = 0; j < count; ++j) {
    const float* xp = x + j * x_step + c0;
    const float* yp = dy + j * C + c0;
    for (int v = 0; v < NV; ++v) acc[v] += Load(xp + 8 * v) * Load(yp + 8 * v);
  }
  for (int v = 0; v < NV; ++v) Store(acc_out + c0 + 8 * v, acc[v]);
}

// Filter gradient of output rows [begin, end) added into `acc` ([k, k, C]).
void FilterGradRows(const Geometry& g, const float* x, const float* dy, float* acc, int64 begin, int64 end) {
  const int64 C = g.c;
  for (int64 r = begin; r < end; ++r) {
    const int64 b = r / g.ho, i = r % g.ho;
    const float* dy_row = dy + g.YIndex(b, i, 0);
    for (int u = 0; u < g.k; ++u) {
      const int64 p = i * g.s - g.pad + u;
      if (p < 0 || p >= g.h) continue;
      for (int v = 0; v < g.k; ++v) {
        // Output columns j whose tap v is inside the input: 0 <= j s - pad + v < W.
        const int64 lo = g.pad - v;
        const int64 j0 = lo <= 0 ? 0 : (lo + g.s - 1) / g.s;
        const int64 j1 = std::min<int64>(g.wo, (g.w - 1 + g.pad - v) / g.s + 1);
        if (j1 <= j0) continue;
        const float* xs = x + g.XIndex(b, p, j0 * g.s - g.pad + v);
        const float* ys = dy_row + j0 * C;
        const int64 count = j1 - j0, step = g.s * C;
        float* a = acc + (u * g.k + v) * C;
        int64 c = 0;
        for (; c + 32 <= C; c += 32) RowDot<4>(xs, ys, step, C, count, c, a);
        for (; c + 16 <= C; c += 16) RowDot<2>(xs, ys, step, C, count, c, a);
        for (; c + 8 <= C; c += 8) RowDot<1>(xs, ys, step, C, count, c, a);
        for (; c < C; ++c) {
          float sum = a[c];
          for (int64 j = 0; j < count; ++j) sum += xs[j * step + c] * ys[j * C + c];
          a[c] = sum;
        }
      }
    }
  }
}

class DepthwiseBase : public OpKernel {
 public:
  explicit DepthwiseBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stride", &stride_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad", &pad_));
  }

 protected:
  // The geometry of an input shape and a filter size.
  tensorflow::Status MakeGeometry(const TensorShape& in, int64 k, Geometry* g) const {
    if (in.dims() != 4) return InvalidArgument("depthwise conv: the input must be NHWC (rank 4), got ", in.DebugString());
    g->n = in.dim_size(0);
    g->h = in.dim_size(1);
    g->w = in.dim_size(2);
    g->c = in.dim_size(3);
    g->k = static_cast<int>(k);
    g->s = stride_;
    g->pad = pad_;
    if (k < 1 || g->h + 2 * pad_ < k || g->w + 2 * pad_ < k)
      return InvalidArgument("depthwise conv: a ", k, "x", k, " filter does not fit the input ", in.DebugString(),
                             " padded by ", pad_);
    g->ho = OutSize(g->h, g->k, stride_, pad_);
    g->wo = OutSize(g->w, g->k, stride_, pad_);
    return tensorflow::OkStatus();
  }

  static tensorflow::Status CheckFilter(const TensorShape& f, int64 c) {
    if (f.dims() == 4 && f.dim_size(0) == f.dim_size(1) && f.dim_size(2) == c && f.dim_size(3) == 1)
      return tensorflow::OkStatus();
    return InvalidArgument("depthwise conv: the filter must be [k, k, ", c, ", 1], got ", f.DebugString());
  }

  static tensorflow::Status CheckGradient(const TensorShape& dy, const Geometry& g) {
    if (dy.dims() == 4 && dy.dim_size(0) == g.n && dy.dim_size(1) == g.ho && dy.dim_size(2) == g.wo &&
        dy.dim_size(3) == g.c)
      return tensorflow::OkStatus();
    return InvalidArgument("depthwise conv: the output gradient must be [", g.n, ", ", g.ho, ", ", g.wo, ", ", g.c,
                           "], got ", dy.DebugString());
  }

  int stride_ = 1;
  int pad_ = 0;
};

class ForwardOp : public DepthwiseBase {
 public:
  using DepthwiseBase::DepthwiseBase;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& f = ctx->input(1);
    OP_REQUIRES(ctx, f.dims() == 4, InvalidArgument("depthwise conv: the filter must be rank 4"));
    Geometry g;
    OP_REQUIRES_OK(ctx, MakeGeometry(x.shape(), f.dim_size(0), &g));
    OP_REQUIRES_OK(ctx, CheckFilter(f.shape(), g.c));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.n, g.ho, g.wo, g.c}), &y));
    const float* xp = x.flat<float>().data();
    const float* fp = f.flat<float>().data();
    float* yp = y->flat<float>().data();
    Parallel(ctx, g.n * g.ho, 2 * g.wo * g.c * g.k * g.k,
             [&](int64 begin, int64 end) { ForwardRows(g, xp, fp, yp, begin, end); });
  }
};

class InputGradOp : public DepthwiseBase {
 public:
  using DepthwiseBase::DepthwiseBase;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& sizes = ctx->input(0);
    const Tensor& f = ctx->input(1);
    const Tensor& dy = ctx->input(2);
    OP_REQUIRES(ctx, sizes.dims() == 1 && sizes.NumElements() == 4,
                InvalidArgument("depthwise conv: input_sizes must be 4 integers, got ", sizes.shape().DebugString()));
    OP_REQUIRES(ctx, f.dims() == 4, InvalidArgument("depthwise conv: the filter must be rank 4"));
    auto s = sizes.vec<int>();
    TensorShape in;
    for (int d = 0; d < 4; ++d) {
      OP_REQUIRES(ctx, s(d) >= 0, InvalidArgument("depthwise conv: negative input size"));
      in.AddDim(s(d));
    }
    Geometry g;
    OP_REQUIRES_OK(ctx, MakeGeometry(in, f.dim_size(0), &g));
    OP_REQUIRES_OK(ctx, CheckFilter(f.shape(), g.c));
    OP_REQUIRES_OK(ctx, CheckGradient(dy.shape(), g));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, in, &dx));
    const float* dyp = dy.flat<float>().data();
    const float* fp = f.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    if (g.s == 1) {
      // At stride 1 the input gradient is the forward pass over dy with the filter turned by 180 degrees and
      // padding k - 1 - pad: dx[p, q] = sum_{u,v} dy[p - (k-1-pad) + u, q - (k-1-pad) + v] f[k-1-u, k-1-v].
      std::vector<float> flipped(static_cast<size_t>(g.k) * g.k * g.c);
      for (int u = 0; u < g.k; ++u)
        for (int v = 0; v < g.k; ++v)
          std::copy(fp + (u * g.k + v) * g.c, fp + (u * g.k + v + 1) * g.c,
                    flipped.data() + ((g.k - 1 - u) * g.k + (g.k - 1 - v)) * g.c);
      Geometry t = g;  // dy as the input, dx as the output
      t.h = g.ho;
      t.w = g.wo;
      t.pad = g.k - 1 - g.pad;
      t.ho = g.h;
      t.wo = g.w;
      const float* flp = flipped.data();
      Parallel(ctx, g.n * g.h, 2 * g.w * g.c * g.k * g.k,
               [&](int64 begin, int64 end) { ForwardRows(t, dyp, flp, dxp, begin, end); });
      return;
    }
    const int64 taps = (g.k + g.s - 1) / g.s;
    Parallel(ctx, g.n * g.h, 2 * g.w * g.c * taps * taps + g.w * g.k * g.k,
             [&](int64 begin, int64 end) { InputGradRows(g, dyp, fp, dxp, begin, end); });
  }
};

class FilterGradOp : public DepthwiseBase {
 public:
  explicit FilterGradOp(OpKernelConstruction* ctx) : DepthwiseBase(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("k", &k_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    Geometry g;
    OP_REQUIRES_OK(ctx, MakeGeometry(x.shape(), k_, &g));
    OP_REQUIRES_OK(ctx, CheckGradient(dy.shape(), g));
    Tensor* df = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({k_, k_, g.c, 1}), &df));
    const int64 size = static_cast<int64>(k_) * k_ * g.c;
    const float* xp = x.flat<float>().data();
    const float* dyp = dy.flat<float>().data();
    // A fixed number of row blocks (not one per thread): the sum's order, hence its rounding, never changes.
    std::vector<double> sums;
    BlockSums(ctx, g.n * g.ho, size, 2 * g.wo * size, kBlocks, &sums,
              [&](int64 begin, int64 end, float* acc) { FilterGradRows(g, xp, dyp, acc, begin, end); });
    float* out = df->flat<float>().data();
    for (int64 e = 0; e < size; ++e) out[e] = static_cast<float>(sums[e]);
  }

 private:
  static constexpr int64 kBlocks = 8;
  int k_ = 1;
};

DimensionHandle OutDim(InferenceContext* c, DimensionHandle in, int k, int s, int pad) {
  if (!c->ValueKnown(in)) return c->UnknownDim();
  return c->MakeDim(OutSize(c->Value(in), k, s, pad));
}

tensorflow::Status ForwardShape(InferenceContext* c) {
  ShapeHandle x, f;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &f));
  int s, pad;
  TF_RETURN_IF_ERROR(c->GetAttr("stride", &s));
  TF_RETURN_IF_ERROR(c->GetAttr("pad", &pad));
  DimensionHandle kd = c->Dim(f, 0);
  if (!c->ValueKnown(kd)) {
    c->set_output(0, c->MakeShape({c->Dim(x, 0), c->UnknownDim(), c->UnknownDim(), c->Dim(x, 3)}));
    return tensorflow::OkStatus();
  }
  const int k = static_cast<int>(c->Value(kd));
  c->set_output(0, c->MakeShape({c->Dim(x, 0), OutDim(c, c->Dim(x, 1), k, s, pad), OutDim(c, c->Dim(x, 2), k, s, pad),
                                 c->Dim(x, 3)}));
  return tensorflow::OkStatus();
}

tensorflow::Status InputGradShape(InferenceContext* c) {
  ShapeHandle out;
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(0, &out));
  TF_RETURN_IF_ERROR(c->WithRank(out, 4, &out));
  c->set_output(0, out);
  return tensorflow::OkStatus();
}

tensorflow::Status FilterGradShape(InferenceContext* c) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
  int k;
  TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
  c->set_output(0, c->MakeShape({k, k, c->Dim(x, 3), 1}));
  return tensorflow::OkStatus();
}

}  // namespace hdas

REGISTER_OP("HdasDepthwiseConv2d")
    .Input("input: float")
    .Input("filter: float")
    .Output("output: float")
    .Attr("stride: int >= 1 = 1")
    .Attr("pad: int >= 0 = 0")
    .SetShapeFn(hdas::ForwardShape)
    .Doc("Depthwise conv, NHWC, [k, k, C, 1] filter, symmetric zero padding `pad`, square `stride`.");

REGISTER_OP("HdasDepthwiseConv2dBackpropInput")
    .Input("input_sizes: int32")
    .Input("filter: float")
    .Input("out_backprop: float")
    .Output("output: float")
    .Attr("stride: int >= 1 = 1")
    .Attr("pad: int >= 0 = 0")
    .SetShapeFn(hdas::InputGradShape)
    .Doc("Gradient of HdasDepthwiseConv2d with respect to its input.");

REGISTER_OP("HdasDepthwiseConv2dBackpropFilter")
    .Input("input: float")
    .Input("out_backprop: float")
    .Output("output: float")
    .Attr("k: int >= 1")
    .Attr("stride: int >= 1 = 1")
    .Attr("pad: int >= 0 = 0")
    .SetShapeFn(hdas::FilterGradShape)
    .Doc("Gradient of HdasDepthwiseConv2d with respect to its [k, k, C, 1] filter.");

REGISTER_KERNEL_BUILDER(Name("HdasDepthwiseConv2d").Device(tensorflow::DEVICE_CPU), hdas::ForwardOp);
REGISTER_KERNEL_BUILDER(Name("HdasDepthwiseConv2dBackpropInput").Device(tensorflow::DEVICE_CPU).HostMemory("input_sizes"),
                        hdas::InputGradOp);
REGISTER_KERNEL_BUILDER(Name("HdasDepthwiseConv2dBackpropFilter").Device(tensorflow::DEVICE_CPU), hdas::FilterGradOp);
