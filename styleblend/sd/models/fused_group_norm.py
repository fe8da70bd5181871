"""Fused GroupNorm forward and backward through ``jt.code``: a few kernels instead of Jittor's dozen.

Jittor runs the plain GroupNorm (``resnet.GroupNorm``: float32 mean, centred variance, normalise, scale) as
separate reductions with one GPU thread block per group; measured on an H100 it costs ≈ 2.6 ms per norm at
SD 2.1's 96² latents (the UNet has 61) and ≈ 90 ms of every 768² training step (docs/performance.md). Here the
statistics are reduced per channel row (one block per (batch, channel): hundreds of blocks instead of 32 groups),
then combined per group, and one element-wise pass writes the output.

* Row statistics: each row of S = H·W values is summed shifted by its first value (``d = x − x₀``: ``Σd`` and
  ``Σd²`` in float32, so a large mean does not cancel the variance away), giving the row's mean and its sum of
  squared deviations ``M2``.
* Group statistics: the rows of a group (equal counts) combine exactly: mean = mean of row means,
  ``M2 = Σ M2_r + S·Σ (mean_r − mean)²``; ``rstd = 1 / sqrt(M2 / n + eps)``.
* Output: ``y = (x − mean)·(rstd·w_c) + b_c`` in the input's dtype (float32 arithmetic; subtracting the mean
  first keeps a large mean from cancelling the result away).
* Backward, with ``x̂ = (x − mean)·rstd``: per row ``Σdy`` and ``Σdy·x̂``; from them ``dw_c = Σ_b Σdy·x̂``,
  ``db_c = Σ_b Σdy`` and per group ``a = Σ_c w_c Σdy / n``, ``β = Σ_c w_c Σdy·x̂ / n``; then
  ``dx = rstd·(w_c·dy − a − x̂·β)``.

The CPU form runs the same three steps as C++ loops, so the algorithm is checked in CI; the CUDA kernels are
checked against the plain GroupNorm by ``bench/group_norm.py`` on the GPU. :func:`supported` is the dispatch rule
``resnet.GroupNorm`` uses (CUDA, float16/float32); ``STYLEBLEND_FUSED_GROUPNORM=0`` switches it off.
"""
from __future__ import annotations

import os

from ...backend import jt
from ...errors import ConfigError

DTYPES = ("float16", "float32")
enabled = os.environ.get("STYLEBLEND_FUSED_GROUPNORM", "1") != "0"

CUDA_HEADER = r"""
#include <cuda_fp16.h>

namespace sb_gn {
constexpr int NT = 256, ITEMS = 4;  // threads per block; elements per thread of the element-wise kernels

// block-wide sum of two floats (NT threads); every thread gets the result
__device__ __forceinline__ float2 block_sum2(float a, float b) {
  __shared__ float sa[NT / 32], sb[NT / 32];
  for (int o = 16; o; o >>= 1) { a += __shfl_xor_sync(0xffffffff, a, o); b += __shfl_xor_sync(0xffffffff, b, o); }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the shared slots may still be read by a previous call
  if (lane == 0) { sa[warp] = a; sb[warp] = b; }
  __syncthreads();
  a = 0.f; b = 0.f;
  for (int w = 0; w < NT / 32; ++w) { a += sa[w]; b += sb[w]; }
  return make_float2(a, b);
}

// one block per (batch, channel) row of s values: the row's mean and sum of squared deviations
template <typename T>
__global__ void __launch_bounds__(NT) row_stats(const T* __restrict__ x, long s, float2* __restrict__ out) {
  const T* row = x + blockIdx.x * s;
  const float x0 = float(row[0]);
  float sd = 0.f, sd2 = 0.f;
  for (long i = threadIdx.x; i < s; i += NT) { const float d = float(row[i]) - x0; sd += d; sd2 += d * d; }
  const float2 t = block_sum2(sd, sd2);
  if (threadIdx.x == 0) out[blockIdx.x] = make_float2(x0 + t.x / s, fmaxf(t.y - t.x * t.x / s, 0.f));
}

// one thread per (batch, group): combine its k rows of s values each
__global__ void group_stats(const float2* __restrict__ rows, int groups_total, int k, long s, float eps,
                            float* __restrict__ mean, float* __restrict__ rstd) {
  const int bg = blockIdx.x * blockDim.x + threadIdx.x;
  if (bg >= groups_total) return;
  const float2* r = rows + (long)bg * k;
  float m = 0.f;
  for (int j = 0; j < k; ++j) m += r[j].x;
  m /= k;
  float m2 = 0.f;
  for (int j = 0; j < k; ++j) { const float d = r[j].x - m; m2 += r[j].y + s * d * d; }
  mean[bg] = m;
  rstd[bg] = 1.f / sqrtf(m2 / (k * s) + eps);
}

// grid (rows, chunks of NT*ITEMS): y = (x - mean) * rstd * w + b
template <typename T>
__global__ void __launch_bounds__(NT) apply(const T* __restrict__ x, const float* __restrict__ w,
                                            const float* __restrict__ bias, const float* __restrict__ mean,
                                            const float* __restrict__ rstd, int c, int k, long s,
                                            T* __restrict__ y) {
  const long row = blockIdx.x, bg = row / c * (c / k) + row % c / k;
  const float m = mean[bg], scale = rstd[bg] * w[row % c], b = bias[row % c];
  const long base = row * s;
  for (long i = (long)blockIdx.y * NT * ITEMS + threadIdx.x, e = 0; e < ITEMS && i < s; ++e, i += NT)
    y[base + i] = T((float(x[base + i]) - m) * scale + b);
}

// backward, one block per row: sum of dy and of dy * xhat
template <typename T>
__global__ void __launch_bounds__(NT) row_grads(const T* __restrict__ x, const T* __restrict__ dy,
                                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                                int c, int k, long s, float2* __restrict__ out) {
  const long row = blockIdx.x, bg = row / c * (c / k) + row % c / k;
  const float m = mean[bg], r = rstd[bg];
  float sdy = 0.f, sdyx = 0.f;
  for (long i = threadIdx.x; i < s; i += NT) {
    const float g = float(dy[row * s + i]);
    sdy += g; sdyx += g * (float(x[row * s + i]) - m) * r;
  }
  const float2 t = block_sum2(sdy, sdyx);
  if (threadIdx.x == 0) out[row] = t;
}

// backward, one thread per channel (dw, db) and one per (batch, group) (the coefficients a, beta)
__global__ void param_and_group_grads(const float2* __restrict__ rows, const float* __restrict__ w, int batch,
                                      int c, int k, long s, float* __restrict__ dw, float* __restrict__ db,
                                      float2* __restrict__ coef) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < c) {
    float a = 0.f, b = 0.f;
    for (int n = 0; n < batch; ++n) { a += rows[(long)n * c + i].y; b += rows[(long)n * c + i].x; }
    dw[i] = a; db[i] = b;
  } else if (i < c + batch * (c / k)) {
    const int bg = i - c, n = bg / (c / k), ch0 = bg % (c / k) * k;
    float a = 0.f, beta = 0.f;
    for (int j = 0; j < k; ++j) {
      const float2 r = rows[(long)n * c + ch0 + j];
      a += w[ch0 + j] * r.x; beta += w[ch0 + j] * r.y;
    }
    coef[bg] = make_float2(a / (k * s), beta / (k * s));
  }
}

// backward, grid (rows, chunks): dx = rstd * (w * dy - a - xhat * beta)
template <typename T>
__global__ void __launch_bounds__(NT) apply_grad(const T* __restrict__ x, const T* __restrict__ dy,
                                                 const float* __restrict__ w, const float* __restrict__ mean,
                                                 const float* __restrict__ rstd, const float2* __restrict__ coef,
                                                 int c, int k, long s, T* __restrict__ dx) {
  const long row = blockIdx.x, bg = row / c * (c / k) + row % c / k;
  const float m = mean[bg], r = rstd[bg], wc = w[row % c], a = coef[bg].x, beta = coef[bg].y;
  const long base = row * s;
  for (long i = (long)blockIdx.y * NT * ITEMS + threadIdx.x, e = 0; e < ITEMS && i < s; ++e, i += NT) {
    const float xhat = (float(x[base + i]) - m) * r;
    dx[base + i] = T(r * (wc * float(dy[base + i]) - a - xhat * beta));
  }
}
}  // namespace sb_gn
"""

# jt.code sources. Forward: in0 x [B, C, S], in1 w [C], in2 b [C]; out0 y, out1 mean [B, G], out2 rstd [B, G],
# out3 row statistics [B, C, 2]. Backward: in0 x, in1 dy, in2 w, in3 mean, in4 rstd; out0 dx, out1 dw [C],
# out2 db [C], out3 row sums [B, C, 2], out4 group coefficients [B, G, 2]. The group count comes from the
# shapes of out1 / out4; EPS is written into the forward source.
CUDA_FORWARD = r"""
{
  const long s = in0_shape2; const int c = in0_shape1, rows = in0_shape0 * c, k = c / out1_shape1;
  const int groups_total = in0_shape0 * (c / k);
  float2* rs = reinterpret_cast<float2*>(out3_p);
  sb_gn::row_stats<<<rows, sb_gn::NT>>>(in0_p, s, rs);
  sb_gn::group_stats<<<(groups_total + 127) / 128, 128>>>(rs, groups_total, k, s, EPS, out1_p, out2_p);
  dim3 grid(rows, (s + sb_gn::NT * sb_gn::ITEMS - 1) / (sb_gn::NT * sb_gn::ITEMS));
  sb_gn::apply<<<grid, sb_gn::NT>>>(in0_p, in1_p, in2_p, out1_p, out2_p, c, k, s, out0_p);
  CHECK(cudaGetLastError() == cudaSuccess) << "fused group norm: kernel launch failed";
}
"""

CUDA_BACKWARD = r"""
{
  const long s = in0_shape2; const int batch = in0_shape0, c = in0_shape1, rows = batch * c, k = c / out4_shape1;
  float2* rs = reinterpret_cast<float2*>(out3_p);
  float2* coef = reinterpret_cast<float2*>(out4_p);
  sb_gn::row_grads<<<rows, sb_gn::NT>>>(in0_p, in1_p, in3_p, in4_p, c, k, s, rs);
  const int n = c + batch * (c / k);
  sb_gn::param_and_group_grads<<<(n + 127) / 128, 128>>>(rs, in2_p, batch, c, k, s, out1_p, out2_p, coef);
  dim3 grid(rows, (s + sb_gn::NT * sb_gn::ITEMS - 1) / (sb_gn::NT * sb_gn::ITEMS));
  sb_gn::apply_grad<<<grid, sb_gn::NT>>>(in0_p, in1_p, in2_p, in3_p, in4_p, coef, c, k, s, out0_p);
  CHECK(cudaGetLastError() == cudaSuccess) << "fused group norm: kernel launch failed";
}
"""

CPU_FORWARD = r"""
const int B = in0_shape0, C = in0_shape1, G = out1_shape1, k = C / G;
const long S = in0_shape2;
for (int b = 0; b < B; b++)
  for (int ch = 0; ch < C; ch++) {
    const float x0 = float(@in0(b, ch, 0));
    float sd = 0.f, sd2 = 0.f;
    for (long i = 0; i < S; i++) { const float d = float(@in0(b, ch, i)) - x0; sd += d; sd2 += d * d; }
    @out3(b, ch, 0) = x0 + sd / S;
    @out3(b, ch, 1) = std::max(sd2 - sd * sd / S, 0.f);
  }
for (int b = 0; b < B; b++)
  for (int g = 0; g < G; g++) {
    float m = 0.f, m2 = 0.f;
    for (int j = 0; j < k; j++) m += @out3(b, g * k + j, 0);
    m /= k;
    for (int j = 0; j < k; j++) { const float d = @out3(b, g * k + j, 0) - m; m2 += @out3(b, g * k + j, 1) + S * d * d; }
    @out1(b, g) = m;
    @out2(b, g) = 1.f / std::sqrt(m2 / (k * S) + EPS);
  }
for (int b = 0; b < B; b++)
  for (int ch = 0; ch < C; ch++) {
    const float m = @out1(b, ch / k), scale = @out2(b, ch / k) * @in1(ch), shift = @in2(ch);
    for (long i = 0; i < S; i++) @out0(b, ch, i) = out0_type((float(@in0(b, ch, i)) - m) * scale + shift);
  }
"""

CPU_BACKWARD = r"""
const int B = in0_shape0, C = in0_shape1, G = out4_shape1, k = C / G;
const long S = in0_shape2;
for (int b = 0; b < B; b++)
  for (int ch = 0; ch < C; ch++) {
    const float m = @in3(b, ch / k), r = @in4(b, ch / k);
    float sdy = 0.f, sdyx = 0.f;
    for (long i = 0; i < S; i++) {
      const float g = float(@in1(b, ch, i));
      sdy += g; sdyx += g * (float(@in0(b, ch, i)) - m) * r;
    }
    @out3(b, ch, 0) = sdy;
    @out3(b, ch, 1) = sdyx;
  }
for (int ch = 0; ch < C; ch++) {
  float a = 0.f, d = 0.f;
  for (int b = 0; b < B; b++) { a += @out3(b, ch, 1); d += @out3(b, ch, 0); }
  @out1(ch) = a;
  @out2(ch) = d;
}
for (int b = 0; b < B; b++)
  for (int g = 0; g < G; g++) {
    float a = 0.f, beta = 0.f;
    for (int j = 0; j < k; j++) { a += @in2(g * k + j) * @out3(b, g * k + j, 0); beta += @in2(g * k + j) * @out3(b, g * k + j, 1); }
    @out4(b, g, 0) = a / (k * S);
    @out4(b, g, 1) = beta / (k * S);
  }
for (int b = 0; b < B; b++)
  for (int ch = 0; ch < C; ch++) {
    const float m = @in3(b, ch / k), r = @in4(b, ch / k), wc = @in2(ch);
    const float a = @out4(b, ch / k, 0), beta = @out4(b, ch / k, 1);
    for (long i = 0; i < S; i++) {
      const float xhat = (float(@in0(b, ch, i)) - m) * r;
      @out0(b, ch, i) = out0_type(r * (wc * float(@in1(b, ch, i)) - a - xhat * beta));
    }
  }
"""

CPU_HEADER = "#include <algorithm>\n#include <cmath>\n"


def fits(x: jt.Var) -> bool:
    """Everything of the dispatch rule but the device: a float16/float32 input [B, C, ...] with pixels."""
    return str(x.dtype) in DTYPES and x.ndim >= 3 and x.numel() > 0


def supported(x: jt.Var) -> bool:
    """The dispatch rule: CUDA on, the fused path enabled, and :func:`fits`."""
    return bool(jt.flags.use_cuda) and enabled and fits(x)


def fused_group_norm(x: jt.Var, weight: jt.Var, bias: jt.Var, groups: int, eps: float) -> jt.Var:
    """GroupNorm of ``x`` [B, C, ...] over ``groups`` groups with per-channel ``weight`` and ``bias``, computed in
    float32 and returned in ``x``'s dtype. Runs the CUDA kernels when ``jt.flags.use_cuda`` is on, else the C++
    loops. Differentiable in ``x``, ``weight`` and ``bias``."""
    if str(x.dtype) not in DTYPES or x.ndim < 3:
        raise ConfigError(f"fused group norm: input {x.dtype}{list(x.shape)} not supported "
                          f"({', '.join(DTYPES)}, at least [B, C, N])")
    if x.shape[1] % groups:
        raise ConfigError(f"fused group norm: {x.shape[1]} channels do not split into {groups} groups")
    return _FusedGroupNorm(groups, eps)(x, weight, bias)


class _FusedGroupNorm(jt.Function):
    """The fused forward, saving x and the group statistics; the gradient is the fused backward."""

    def __init__(self, groups: int, eps: float):
        self.groups, self.eps = groups, eps

    def execute(self, x: jt.Var, weight: jt.Var, bias: jt.Var) -> jt.Var:
        b, c = x.shape[0], x.shape[1]
        x3 = x.reshape(b, c, -1)
        eps = f"{self.eps:.9e}f"
        src = {"cuda_src": CUDA_FORWARD.replace("EPS", eps), "cpu_src": CPU_FORWARD.replace("EPS", eps)}
        y, mean, rstd, _ = jt.code([x3.shape, (b, self.groups), (b, self.groups), (b, c, 2)],
                                   [x.dtype, "float32", "float32", "float32"],
                                   [x3, weight.float32(), bias.float32()],
                                   cuda_header=CUDA_HEADER, cpu_header=CPU_HEADER, **src)
        self.saved = (x3, weight, bias, mean, rstd)
        return y.reshape(x.shape)

    def grad(self, dy: jt.Var):
        x3, weight, bias, mean, rstd = self.saved
        b, c = x3.shape[0], x3.shape[1]
        dx, dw, db, _, _ = jt.code([x3.shape, (c,), (c,), (b, c, 2), (b, self.groups, 2)],
                                   [x3.dtype, "float32", "float32", "float32", "float32"],
                                   [x3, dy.reshape(x3.shape).cast(x3.dtype), weight.float32(), mean, rstd],
                                   cuda_header=CUDA_HEADER, cpu_header=CPU_HEADER,
                                   cuda_src=CUDA_BACKWARD, cpu_src=CPU_BACKWARD)
        return dx.reshape(dy.shape), dw.cast(weight.dtype), db.cast(bias.dtype)
