"""Fused (flash-style) attention forward through ``jt.code``: softmax(q kᵀ / sqrt(d)) v without the score matrix.

Per (batch·head) and block of queries, the kernel walks over tiles of ``BLOCK_KEYS`` keys and keeps an online
softmax: a running row maximum ``m`` and row sum ``l`` (float32), rescaling the output accumulator by
``exp(m_old - m_new)`` whenever the maximum grows, and divides by ``l`` once at the end. Memory is O(N·d)
instead of the naive form's O(N²) scores.

* CUDA float16: tensor cores through WMMA 16×16×16 fragments (``nvcuda::wmma``), float32 accumulation; one
  warp owns 16 query rows; K/V tiles are double-buffered in shared memory with ``cp.async``. The softmax reads
  the score tile back from shared memory (two lanes per row); the output stays in accumulator fragments and
  is rescaled in place, using each fragment element's row, found once per warp by loading a known matrix.
* CUDA float32: plain FMA (no tensor cores, no TF32 rounding), two threads per query row.
* CPU: the same online-softmax loop over key tiles in C++, so the algorithm is checked in CI.

Backward: :class:`_FusedAttention` keeps only q, k, v and the output, and its gradient recomputes the
probabilities for blocks of queries (:func:`attention_backward`, plain Jittor matrix products; the
flash-attention identity dS = P ∘ (dP − rowsum(dO ∘ O))), so no N² score matrix outlives one block. Measured on
an H100 (docs/performance.md) it trains 25–35 % slower than the naive form and lowers the peak by only 5 GB, so
training uses it only when asked: ``STYLEBLEND_FUSED_BACKWARD=1``.

:func:`supported` is the dispatch rule that ``styleblend.models.attention.scaled_dot_product_attention`` uses,
which keeps the naive form for CPU, masks, other shapes and (unless asked) training. ``STYLEBLEND_FUSED_ATTENTION=0``
switches the dispatch off (for A/B timings).
"""
from __future__ import annotations

import math
import os
from typing import Optional

from ...backend import jt, nn

from ...errors import ConfigError
from .ops import permute

BLOCK_KEYS = 64  # keys per tile (CPU and float16 kernels; the float32 kernel uses 32)
MAX_HEAD_DIM = 128
DTYPES = ("float16", "float32")
BACKWARD_BLOCK_BYTES = 256 * 2**20  # float32 probabilities of one query block in the backward pass
enabled = os.environ.get("STYLEBLEND_FUSED_ATTENTION", "1") != "0"
backward_enabled = os.environ.get("STYLEBLEND_FUSED_BACKWARD", "0") == "1"

CUDA_HEADER = r"""
#include <mma.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

namespace sb_attn {
using namespace nvcuda;
constexpr int BN = 64;  // keys per tile
using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Shared memory of the float16 kernel (byte offsets): Q tile, K0 V0 K1 V1 tiles (rows of LDH halves),
// per-warp float scores (LDS), per-warp half probabilities (LDP), per-warp row factors.
template <int DP, int WARPS> struct F16Layout {
  static constexpr int BM = 16 * WARPS;
  static constexpr int LDH = DP + 8, LDS = BN + 4, LDP = BN + 8, LDO = DP + 4;
  static constexpr int KV = BM * LDH * 2;
  static constexpr int KV_TILE = BN * LDH * 2;
  static constexpr int S = KV + 4 * KV_TILE;
  static constexpr int P = S + WARPS * 16 * LDS * 4;
  static constexpr int R = P + WARPS * 16 * LDP * 2;
  static constexpr int BYTES = R + WARPS * 16 * 4;
  static_assert(WARPS * 16 * LDO * 4 <= 4 * KV_TILE, "the output staging reuses the K/V tiles");
};

// rows [row0, row0 + nrows) of a [n, D] half matrix -> shared rows of LDH halves; rows >= n become zeros
template <int D, int LDH, int NT>
__device__ __forceinline__ void load_rows_async(__half* dst, const __half* src, int row0, int nrows, int n) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < nrows * CH; i += NT) {
    const int r = i / CH, c = i % CH;
    const bool ok = row0 + r < n;
    const __half* g = ok ? src + (size_t)(row0 + r) * D + c * 8 : src;
    __pipeline_memcpy_async(dst + r * LDH + c * 8, g, 16, ok ? 0 : 16);
  }
}

template <int D, int DP, int WARPS>
__global__ void __launch_bounds__(WARPS * 32)
attn_fwd_f16(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
             __half* __restrict__ o, int nq, int nk, float scale_log2) {
  using L = F16Layout<DP, WARPS>;
  constexpr int NT = WARPS * 32, BM = L::BM, LDH = L::LDH, LDS = L::LDS, LDP = L::LDP, LDO = L::LDO;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = lane >> 1, hf = lane & 1;  // softmax: two lanes per score row
  const size_t bh = blockIdx.y;
  const int q0 = blockIdx.x * BM;
  q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; o += bh * nq * D;
  __half* qs = reinterpret_cast<__half*>(smem);
  __half* kv = reinterpret_cast<__half*>(smem + L::KV);
  float* sw = reinterpret_cast<float*>(smem + L::S) + warp * 16 * LDS;
  __half* pw = reinterpret_cast<__half*>(smem + L::P) + warp * 16 * LDP;
  float* rw = reinterpret_cast<float*>(smem + L::R) + warp * 16;

  if constexpr (DP > D)  // head-dim padding columns of Q and the four K/V tiles stay zero (never loaded)
    for (int i = threadIdx.x; i < (BM + 4 * BN) * (DP - D); i += NT)
      qs[(i / (DP - D)) * LDH + D + i % (DP - D)] = __float2half(0.f);
  load_rows_async<D, LDH, NT>(qs, q, q0, BM, nq);
  load_rows_async<D, LDH, NT>(kv, k, 0, BN, nk);
  load_rows_async<D, LDH, NT>(kv + BN * LDH, v, 0, BN, nk);
  __pipeline_commit();

  // which row of the 16x16 tile each accumulator element holds: load a matrix whose entries are their row
  for (int i = lane; i < 256; i += 32) sw[(i / 16) * LDS + i % 16] = float(i / 16);
  __syncwarp();
  Acc rows;
  wmma::load_matrix_sync(rows, sw, LDS, wmma::mem_row_major);
  int row_of[Acc::num_elements];
#pragma unroll
  for (int i = 0; i < Acc::num_elements; ++i) row_of[i] = int(rows.x[i]);
  __syncwarp();

  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> qa[DP / 16];
  Acc acc[DP / 16];
#pragma unroll
  for (int n = 0; n < DP / 16; ++n) wmma::fill_fragment(acc[n], 0.f);
  float m_run = -INFINITY, l_run = 0.f;
  const int tiles = (nk + BN - 1) / BN;

  for (int t = 0; t < tiles; ++t) {
    if (t + 1 < tiles) {  // prefetch the next K/V tile into the other buffer
      __half* nxt = kv + ((t + 1) & 1) * 2 * BN * LDH;
      load_rows_async<D, LDH, NT>(nxt, k, (t + 1) * BN, BN, nk);
      load_rows_async<D, LDH, NT>(nxt + BN * LDH, v, (t + 1) * BN, BN, nk);
      __pipeline_commit();
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    if (t == 0)
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk) wmma::load_matrix_sync(qa[kk], qs + warp * 16 * LDH + kk * 16, LDH);
    const __half* ks = kv + (t & 1) * 2 * BN * LDH;
    const __half* vs = ks + BN * LDH;

    // scores of this warp's 16 queries against the tile's 64 keys -> shared memory (float32)
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      Acc s;
      wmma::fill_fragment(s, 0.f);
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> kb;
        wmma::load_matrix_sync(kb, ks + j * 16 * LDH + kk * 16, LDH);
        wmma::mma_sync(s, qa[kk], kb, s);
      }
      wmma::store_matrix_sync(sw + j * 16, s, LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // online softmax: lanes 2r and 2r+1 share row r (columns 4j + 2hf, +1); keys past nk are masked
    const int valid = nk - t * BN;
    float2 sv[BN / 4];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < BN / 4; ++j) {
      const int c = 4 * j + 2 * hf;
      float2 x = *reinterpret_cast<const float2*>(sw + r * LDS + c);
      x.x = c < valid ? x.x * scale_log2 : -INFINITY;
      x.y = c + 1 < valid ? x.y * scale_log2 : -INFINITY;
      sv[j] = x;
      mx = fmaxf(mx, fmaxf(x.x, x.y));
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_run, mx);  // finite: every tile holds at least one key
    const float alpha = exp2f(m_run - m_new);
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < BN / 4; ++j) {
      const float p0 = exp2f(sv[j].x - m_new), p1 = exp2f(sv[j].y - m_new);
      sum += p0 + p1;
      *reinterpret_cast<__half2*>(pw + r * LDP + 4 * j + 2 * hf) = __floats2half2_rn(p0, p1);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l_run = l_run * alpha + sum;
    m_run = m_new;
    if (hf == 0) rw[r] = alpha;
    __syncwarp();

    // acc = acc * alpha (per row) + P V
#pragma unroll
    for (int n = 0; n < DP / 16; ++n)
#pragma unroll
      for (int i = 0; i < Acc::num_elements; ++i) acc[n].x[i] *= rw[row_of[i]];
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> pa;
      wmma::load_matrix_sync(pa, pw + kk * 16, LDP);
#pragma unroll
      for (int n = 0; n < DP / 16; ++n) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> vb;
        wmma::load_matrix_sync(vb, vs + kk * 16 * LDH + n * 16, LDH);
        wmma::mma_sync(acc[n], pa, vb, acc[n]);
      }
    }
    __syncthreads();  // this K/V buffer is refilled next iteration
  }

  // out = acc / l, staged through the (now free) K/V tiles
  float* ow = reinterpret_cast<float*>(smem + L::KV) + warp * 16 * LDO;
#pragma unroll
  for (int n = 0; n < DP / 16; ++n) wmma::store_matrix_sync(ow + n * 16, acc[n], LDO, wmma::mem_row_major);
  if (hf == 0) rw[r] = 1.f / l_run;
  __syncwarp();
  for (int i = lane; i < 16 * (D / 2); i += 32) {
    const int rr = i / (D / 2), c = 2 * (i % (D / 2)), row = q0 + warp * 16 + rr;
    if (row < nq)
      *reinterpret_cast<__half2*>(o + (size_t)row * D + c) =
          __floats2half2_rn(ow[rr * LDO + c] * rw[rr], ow[rr * LDO + c + 1] * rw[rr]);
  }
}

// float32: 64 queries a block, two threads a query (each owns alternate float4 chunks of the head dim)
template <int D>
__global__ void __launch_bounds__(128)
attn_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
             float* __restrict__ o, int nq, int nk, float scale_log2) {
  constexpr int BM = 64, BK = 32, C4 = D / 4, NC = D / 8;
  __shared__ float4 ks[BK * C4], vs[BK * C4];
  const int hf = threadIdx.x & 1, row = blockIdx.x * BM + (threadIdx.x >> 1);
  const size_t bh = blockIdx.y;
  q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; o += bh * nq * D;
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  float4 qr[NC], acc[NC];
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    float4 x = row < nq ? reinterpret_cast<const float4*>(q + (size_t)row * D)[2 * c + hf] : zero;
    qr[c] = make_float4(x.x * scale_log2, x.y * scale_log2, x.z * scale_log2, x.w * scale_log2);
    acc[c] = zero;
  }
  float m_run = -INFINITY, l_run = 0.f;
  for (int t0 = 0; t0 < nk; t0 += BK) {
    __syncthreads();
    for (int i = threadIdx.x; i < BK * C4; i += 128) {
      const bool ok = t0 + i / C4 < nk;
      ks[i] = ok ? reinterpret_cast<const float4*>(k + (size_t)t0 * D)[i] : zero;
      vs[i] = ok ? reinterpret_cast<const float4*>(v + (size_t)t0 * D)[i] : zero;
    }
    __syncthreads();
    float s[BK];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < BK; ++j) {
      float dot = 0.f;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const float4 kk = ks[j * C4 + 2 * c + hf];
        dot += qr[c].x * kk.x + qr[c].y * kk.y + qr[c].z * kk.z + qr[c].w * kk.w;
      }
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      s[j] = t0 + j < nk ? dot : -INFINITY;
      mx = fmaxf(mx, s[j]);
    }
    const float m_new = fmaxf(m_run, mx), alpha = exp2f(m_run - m_new);
    l_run *= alpha;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      acc[c].x *= alpha; acc[c].y *= alpha; acc[c].z *= alpha; acc[c].w *= alpha;
    }
#pragma unroll
    for (int j = 0; j < BK; ++j) {
      const float p = exp2f(s[j] - m_new);
      l_run += p;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const float4 vv = vs[j * C4 + 2 * c + hf];
        acc[c].x += p * vv.x; acc[c].y += p * vv.y; acc[c].z += p * vv.z; acc[c].w += p * vv.w;
      }
    }
    m_run = m_new;
  }
  if (row < nq) {
    const float inv = 1.f / l_run;
#pragma unroll
    for (int c = 0; c < NC; ++c)
      reinterpret_cast<float4*>(o + (size_t)row * D)[2 * c + hf] =
          make_float4(acc[c].x * inv, acc[c].y * inv, acc[c].z * inv, acc[c].w * inv);
  }
}
}  // namespace sb_attn
"""

CUDA_LAUNCH = r"""
{
  const int nq = in0_shape1, nk = in1_shape1;
  CHECK((((size_t)in0_p | (size_t)in1_p | (size_t)in2_p | (size_t)out0_p) & 15) == 0)
      << "fused attention: q, k, v and the output must be 16-byte aligned";
  cudaGetLastError();
  KERNEL_LAUNCH
  CHECK(cudaGetLastError() == cudaSuccess) << "fused attention: kernel launch failed";
}
"""

F16_LAUNCH = """
  auto kernel = sb_attn::attn_fwd_f16<{d}, {dp}, {warps}>;
  const int smem = sb_attn::F16Layout<{dp}, {warps}>::BYTES;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  dim3 grid((nq + {bm} - 1) / {bm}, in0_shape0);
  kernel<<<grid, {threads}, smem>>>(in0_p, in1_p, in2_p, out0_p, nq, nk, {scale}f);
"""

F32_LAUNCH = """
  dim3 grid((nq + 63) / 64, in0_shape0);
  sb_attn::attn_fwd_f32<{d}><<<grid, 128>>>(in0_p, in1_p, in2_p, out0_p, nq, nk, {scale}f);
"""

CPU_HEADER = "#include <algorithm>\n#include <cmath>\n#include <vector>\n"

CPU_SRC = """
@alias(q, in0)
@alias(k, in1)
@alias(v, in2)
@alias(o, out0)
const int D = {d}, BN = {bn};
const float scale_log2 = {scale}f;
std::vector<float> acc(D), s(BN);
for (int b = 0; b < q_shape0; b++)
  for (int i = 0; i < q_shape1; i++) {{
    float m_run = -INFINITY, l_run = 0.f;
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int t0 = 0; t0 < k_shape1; t0 += BN) {{
      const int n = std::min(BN, (int)k_shape1 - t0);
      float mx = -INFINITY;
      for (int j = 0; j < n; j++) {{
        float dot = 0.f;
        for (int d = 0; d < D; d++) dot += float(@q(b, i, d)) * float(@k(b, t0 + j, d));
        s[j] = dot * scale_log2;
        mx = std::max(mx, s[j]);
      }}
      const float m_new = std::max(m_run, mx), alpha = std::exp2(m_run - m_new);
      l_run *= alpha;
      for (int d = 0; d < D; d++) acc[d] *= alpha;
      for (int j = 0; j < n; j++) {{
        const float p = std::exp2(s[j] - m_new);
        l_run += p;
        for (int d = 0; d < D; d++) acc[d] += p * float(@v(b, t0 + j, d));
      }}
      m_run = m_new;
    }}
    for (int d = 0; d < D; d++) @o(b, i, d) = out0_type(acc[d] / l_run);
  }}
"""


def head_dim_ok(d: int) -> bool:
    """Head dims the kernels take: multiples of 8 up to ``MAX_HEAD_DIM`` (16-byte rows)."""
    return d % 8 == 0 and 0 < d <= MAX_HEAD_DIM


def fits(q: jt.Var, k: jt.Var, v: jt.Var, mask: Optional[jt.Var] = None) -> bool:
    """Everything of the dispatch rule but the device: no mask, no gradient needed (unless
    :data:`backward_enabled`), shapes and dtype."""
    needs_grad = not jt.flags.no_grad and any(x.requires_grad for x in (q, k, v))
    if mask is not None or (needs_grad and not backward_enabled):
        return False
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4 or k.shape != v.shape:
        return False
    b, h, nq, d = q.shape
    return (str(q.dtype) in DTYPES and q.dtype == k.dtype == v.dtype and tuple(k.shape[:2]) == (b, h)
            and k.shape[3] == d and nq > 0 and k.shape[2] > 0 and head_dim_ok(d))


def supported(q: jt.Var, k: jt.Var, v: jt.Var, mask: Optional[jt.Var] = None) -> bool:
    """The dispatch rule: CUDA on, the fused path enabled, and :func:`fits`."""
    return bool(jt.flags.use_cuda) and enabled and fits(q, k, v, mask)


def fused_attention(q: jt.Var, k: jt.Var, v: jt.Var, warps: int = 4, block_rows: int = 0) -> jt.Var:
    """softmax(q kᵀ / sqrt(d)) v for [B, H, Nq, d] queries and [B, H, Nk, d] keys/values.

    Runs the CUDA kernel when ``jt.flags.use_cuda`` is on, else the C++ loop. ``warps`` (float16 on CUDA, 4 or 8):
    warps per block, 16 queries each. Differentiable: the gradient recomputes the probabilities in blocks of
    ``block_rows`` queries (0 = as many as fit :data:`BACKWARD_BLOCK_BYTES`).
    """
    d = q.shape[-1]
    if not head_dim_ok(d) or str(q.dtype) not in DTYPES:
        raise ConfigError(f"fused attention: head dim {d} / dtype {q.dtype} not supported "
                          f"(multiples of 8 up to {MAX_HEAD_DIM}; {', '.join(DTYPES)})")
    return _FusedAttention(warps, block_rows)(q, k, v)


class _FusedAttention(jt.Function):
    """The fused forward, saving q, k, v and the output; the gradient is :func:`attention_backward`."""

    def __init__(self, warps: int, block_rows: int):
        self.warps, self.block_rows = warps, block_rows

    def execute(self, q: jt.Var, k: jt.Var, v: jt.Var) -> jt.Var:
        self.saved = (q, k, v, _forward(q, k, v, self.warps))
        return self.saved[-1]

    def grad(self, dout: jt.Var):
        q, k, v, out = self.saved
        b, h, _, _ = q.shape
        rows = self.block_rows or max(16, BACKWARD_BLOCK_BYTES // (4 * b * h * k.shape[2]))
        return attention_backward(q, k, v, out, dout, rows)


def attention_backward(q: jt.Var, k: jt.Var, v: jt.Var, out: jt.Var, dout: jt.Var, rows: int):
    """(dq, dk, dv) of softmax(q kᵀ / sqrt(d)) v, recomputing the probabilities ``rows`` queries at a time.

    Per block: P = softmax(S), dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = dS K / sqrt(d),
    dK += dSᵀ Q / sqrt(d). Softmax and the dK/dV sums in float32; products in the inputs' dtype.
    """
    dtype, scale = q.dtype, q.shape[-1] ** -0.5
    k_t, v_t = permute(k, (0, 1, 3, 2)), permute(v, (0, 1, 3, 2))
    delta = (dout.float32() * out.float32()).sum(-1, keepdims=True)
    dq, dk, dv = [], jt.zeros(k.shape, "float32"), jt.zeros(v.shape, "float32")
    for i in range(0, q.shape[2], rows):
        q_i, do_i = q[:, :, i:i + rows], dout[:, :, i:i + rows]
        p = nn.softmax((jt.matmul(q_i, k_t) * scale).float32(), dim=-1)
        dv = dv + jt.matmul(permute(p, (0, 1, 3, 2)).cast(dtype), do_i).float32()
        ds = p * (jt.matmul(do_i, v_t).float32() - delta[:, :, i:i + rows])
        dq.append(jt.matmul(ds.cast(dtype), k).float32() * scale)
        dk = dk + jt.matmul(permute(ds, (0, 1, 3, 2)).cast(dtype), q_i).float32() * scale
    return jt.concat(dq, dim=2).cast(dtype), dk.cast(dtype), dv.cast(dtype)


def _forward(q: jt.Var, k: jt.Var, v: jt.Var, warps: int) -> jt.Var:
    """The kernel launch (CUDA, else the C++ loop) on [B, H, N, d] inputs."""
    b, h, nq, d = q.shape
    nk = k.shape[2]
    q3, k3, v3 = (x.reshape(b * h, n, d) for x, n in ((q, nq), (k, nk), (v, nk)))
    scale = f"{d ** -0.5 * math.log2(math.e):.9e}"
    if str(q.dtype) == "float16":
        dp = (d + 15) // 16 * 16
        launch = F16_LAUNCH.format(d=d, dp=dp, warps=warps, bm=16 * warps, threads=32 * warps, scale=scale)
    else:
        launch = F32_LAUNCH.format(d=d, scale=scale)
    out = jt.code(q3.shape, q3.dtype, [q3, k3, v3], cuda_header=CUDA_HEADER,
                  cuda_src=CUDA_LAUNCH.replace("KERNEL_LAUNCH", launch), cpu_header=CPU_HEADER,
                  cpu_src=CPU_SRC.format(d=d, bn=BLOCK_KEYS, scale=scale))
    return out.reshape(b, h, nq, d)
