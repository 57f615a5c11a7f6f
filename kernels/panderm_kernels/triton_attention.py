"""FlashAttention-2 style attention in Triton: non-causal, no mask, any sequence length.

Forward: one program per (query block, batch·head); loops over key blocks with an online
softmax in fp32 and saves the row logsumexp (base 2). Backward: ``delta = rowsum(dO·O)``
preprocess, then a dK/dV kernel (one program per key block, loops over queries) and a dQ
kernel (one program per query block, loops over keys); both recompute P from the LSE, so
nothing of size N×N is ever stored and no atomics are needed.

Supports fp16/bf16/fp32 and head dims 1..128 (padded to a power of two ≥ 16 in registers).
Importing this module imports triton: do it lazily, after ``TRITON_INTERPRET`` is settled.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128
LOG2E = 1.4426950408889634

INTERPRET = bool(triton.knobs.runtime.interpret)
# Triton 3.8's interpreter multiplies bf16 *bit patterns* in tl.dot; upcast there (only there).
_UPCAST_BF16_DOT = tl.constexpr(INTERPRET)


def _configs(block_m: tuple[int, ...], block_n: tuple[int, ...]) -> list[triton.Config]:
    """Hopper search space; the interpreter gets one small config so tests stay fast."""
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm in block_m for bn in block_n for w in (4, 8) for s in (2, 3)]


def _autotune(configs, key):
    # triton.autotune needs a GPU driver even for a single config, so skip it when interpreting.
    if INTERPRET:
        meta = configs[0].kwargs

        def wrap(kernel):
            return _Fixed(kernel, meta)

        return wrap
    return triton.autotune(configs=configs, key=key)


class _Fixed:
    """Mimics an autotuned kernel (``kernel[grid](...)``) with fixed meta-parameters."""

    def __init__(self, kernel, meta):
        self.kernel, self.meta = kernel, meta

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            g = grid(self.meta) if callable(grid) else grid
            return self.kernel[g](*args, **kwargs, **self.meta)

        return launch


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if _UPCAST_BF16_DOT:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    # fp32 inputs: full precision like SDPA's default (TF32 would cost ~1e-3 accuracy).
    if IEEE:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@_autotune(_configs((64, 128), (64, 128)), key=["N_Q", "N_KV", "BLOCK_D"])
@triton.jit
def _attn_fwd(Q, K, V, O, LSE, qk_scale,
              sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, son, sod,
              H, N_Q, N_KV, D,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < N_Q
    d_ok = offs_d < D

    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :] * sqd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, N_KV, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < N_KV
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * skn + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        # Scores in base-2 units: exp2 is cheaper than exp and the LSE is kept in the same units.
        s = _dot(q, tl.trans(k), IEEE) * qk_scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        # Every block has ≥ 1 valid column (start_n < N_KV), so m_new is finite.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * svn + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        m_i = m_new

    acc = acc / l_i[:, None]
    tl.store(LSE + pid_bh * N_Q + offs_m, m_i + tl.log2(l_i), mask=row_ok)
    tl.store(O + b * sob + h * soh + offs_m[:, None] * son + offs_d[None, :] * sod,
             acc.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, sob, soh, son, sod, sgb, sgh, sgn, sgd, H, N_Q, D,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < N_Q)[:, None] & (offs_d < D)[None, :]
    o = tl.load(O + b * sob + h * soh + offs_m[:, None] * son + offs_d[None, :] * sod, mask=mask, other=0.0)
    do = tl.load(DO + b * sgb + h * sgh + offs_m[:, None] * sgn + offs_d[None, :] * sgd, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh * N_Q + offs_m, delta, mask=offs_m < N_Q)


@_autotune(_configs((64, 128), (64, 128)), key=["N_Q", "N_KV", "BLOCK_D"])
@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale, qk_scale,
                   sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sgb, sgh, sgn, sgd,
                   H, N_Q, N_KV, D,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    # DK/DV are fresh contiguous (B, H, N_KV, D) tensors, so their strides are implied.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    col_ok = cols < N_KV
    d_ok = offs_d < D
    kv_mask = col_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * skb + h * skh + cols[:, None] * skn + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + h * svh + cols[:, None] * svn + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sgb + h * sgh

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(0, N_Q, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < N_Q
        q_mask = row_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + rows[:, None] * sqn + offs_d[None, :] * sqd, mask=q_mask, other=0.0)
        do = tl.load(do_base + rows[:, None] * sgn + offs_d[None, :] * sgd, mask=q_mask, other=0.0)
        lse = tl.load(LSE + pid_bh * N_Q + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + pid_bh * N_Q + rows, mask=row_ok, other=0.0)
        # Work with transposed tiles (keys × queries) so dK/dV accumulate without transposes.
        p_t = tl.exp2(_dot(k, tl.trans(q), IEEE) * qk_scale - lse[None, :])
        p_t = tl.where(row_ok[None, :], p_t, 0.0)
        dv += _dot(p_t.to(do.dtype), do, IEEE)
        dp_t = _dot(v, tl.trans(do), IEEE)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _dot(ds_t.to(q.dtype), q, IEEE)

    out = pid_bh * N_KV * D + cols[:, None] * D + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@_autotune(_configs((64, 128), (64, 128)), key=["N_Q", "N_KV", "BLOCK_D"])
@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, sm_scale, qk_scale,
                 sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sgb, sgh, sgn, sgd,
                 H, N_Q, N_KV, D,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < N_Q
    d_ok = offs_d < D
    q_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + offs_d[None, :] * sqd, mask=q_mask, other=0.0)
    do = tl.load(DO + b * sgb + h * sgh + rows[:, None] * sgn + offs_d[None, :] * sgd, mask=q_mask, other=0.0)
    lse = tl.load(LSE + pid_bh * N_Q + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + pid_bh * N_Q + rows, mask=row_ok, other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, N_KV, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < N_KV
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * skn + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * svn + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
        p = tl.exp2(_dot(q, tl.trans(k), IEEE) * qk_scale - lse[:, None])
        p = tl.where(col_ok[None, :], p, 0.0)
        dp = _dot(do, tl.trans(v), IEEE)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, IEEE)

    out = pid_bh * N_Q * D + rows[:, None] * D + offs_d[None, :]
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=q_mask)


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))  # tl.dot needs K ≥ 16


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.stride())


def _forward(q, k, v, scale):
    B, H, n_q, D = q.shape
    n_kv = k.shape[2]
    o = torch.empty((B, H, n_q, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, n_q), dtype=torch.float32, device=q.device)
    grid = lambda meta: (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)  # noqa: E731
    _attn_fwd[grid](q, k, v, o, lse, scale * LOG2E,
                    *_strides(q), *_strides(k), *_strides(v), *_strides(o),
                    H, n_q, n_kv, D, BLOCK_D=_block_d(D), IEEE=q.dtype == torch.float32)
    return o, lse


def _backward(q, k, v, o, lse, do, scale):
    B, H, n_q, D = q.shape
    n_kv = k.shape[2]
    block_d = _block_d(D)
    ieee = q.dtype == torch.float32
    delta = torch.empty_like(lse)
    block_m = 16 if INTERPRET else 64
    _attn_bwd_delta[(triton.cdiv(n_q, block_m), B * H)](o, do, delta, *_strides(o), *_strides(do), H, n_q, D,
                                                        BLOCK_M=block_m, BLOCK_D=block_d)
    dq = torch.empty((B, H, n_q, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, n_kv, D), dtype=k.dtype, device=k.device)
    dv = torch.empty((B, H, n_kv, D), dtype=v.dtype, device=v.device)
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(do), H, n_q, n_kv, D)
    _attn_bwd_dkdv[lambda meta: (triton.cdiv(n_kv, meta["BLOCK_N"]), B * H)](
        q, k, v, do, lse, delta, dk, dv, scale, scale * LOG2E, *common, BLOCK_D=block_d, IEEE=ieee)
    _attn_bwd_dq[lambda meta: (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)](
        q, k, v, do, lse, delta, dq, scale, scale * LOG2E, *common, BLOCK_D=block_d, IEEE=ieee)
    return dq, dk, dv


class TritonAttention(torch.autograd.Function):
    """``softmax(q kᵀ · scale) v`` with FlashAttention-2 style Triton forward and backward."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        o, lse = _forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, do, ctx.scale)
        return dq, dk, dv, None


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the Triton kernel can't take these inputs (``None`` if it can)."""
    if q.dtype not in SUPPORTED_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if not 1 <= q.shape[-1] <= MAX_HEAD_DIM:
        return f"head dim {q.shape[-1]} (supported: 1..{MAX_HEAD_DIM})"
    if v.shape[-1] != q.shape[-1]:
        return "value head dim differs from query head dim"
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Triton attention on validated ``(B, H, N, Dh)`` inputs (see ``panderm_kernels.attention``)."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return TritonAttention.apply(q, k, v, float(scale))
