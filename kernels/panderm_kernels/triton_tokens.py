"""Token gather / scatter along dim 1 of ``(B, N, C)`` tensors in Triton.

One program copies one token row (a ``BLOCK_C`` slice of it), so the work is a pure
memory copy with the index read once per row. Gather's backward is a scatter-add (atomic
fp32 adds, correct with repeated indices); scatter's backward is a gather plus a
zero-fill of the scattered rows. Indices outside ``[0, N)`` are skipped by the kernels
(never read or written out of bounds); the public wrapper reports them as errors.

Importing this module imports triton: do it lazily, after ``TRITON_INTERPRET`` is settled.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTERPRET = bool(triton.knobs.runtime.interpret)

# Scatter modes (constexpr): copy src rows in, write zeros, or atomically add src rows.
_STORE, _ZERO, _ADD = 0, 1, 2


@triton.jit
def _gather_kernel(X, IDX, OUT, N, M, C, sxb, sxn, sxc, sib, sim, sob, som, soc, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)  # over B·M
    b = row // M
    m = row % M
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    idx = tl.load(IDX + b * sib + m * sim)
    ok = (idx >= 0) & (idx < N)
    c_ok = offs_c < C
    vals = tl.load(X + b * sxb + idx * sxn + offs_c * sxc, mask=c_ok & ok, other=0.0)
    tl.store(OUT + b * sob + m * som + offs_c * soc, vals, mask=c_ok)


@triton.jit
def _scatter_kernel(DST, IDX, SRC, N, M, C, sdb, sdn, sdc, sib, sim, ssb, ssm, ssc,
                    BLOCK_C: tl.constexpr, MODE: tl.constexpr):
    row = tl.program_id(0)  # over B·M
    b = row // M
    m = row % M
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    idx = tl.load(IDX + b * sib + m * sim)
    mask = (offs_c < C) & (idx >= 0) & (idx < N)
    dst = DST + b * sdb + idx * sdn + offs_c * sdc
    if MODE == 1:
        tl.store(dst, tl.zeros([BLOCK_C], dtype=DST.dtype.element_ty), mask=mask)
    else:
        vals = tl.load(SRC + b * ssb + m * ssm + offs_c * ssc, mask=mask, other=0.0)
        if MODE == 2:
            tl.atomic_add(dst, vals.to(DST.dtype.element_ty), mask=mask)
        else:
            tl.store(dst, vals.to(DST.dtype.element_ty), mask=mask)


def _block_c(C: int) -> int:
    # 1024 channels × 2 B = one 2 KiB row per program on GPU; small blocks keep the interpreter quick.
    return min(triton.next_power_of_2(max(C, 1)), 64 if INTERPRET else 1024)


def _num_warps(block_c: int) -> int:
    return 1 if INTERPRET else max(1, min(8, block_c // 256))


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    B, N, C = x.shape
    M = index.shape[1]
    out = torch.empty((B, M, C), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    bc = _block_c(C)
    _gather_kernel[(B * M, triton.cdiv(C, bc))](x, index, out, N, M, C, *x.stride(), *index.stride(), *out.stride(),
                                                BLOCK_C=bc, num_warps=_num_warps(bc))
    return out


def _scatter_(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor | None, mode: int) -> torch.Tensor:
    """In-place row scatter into ``dst`` (``src`` unused for ``_ZERO``)."""
    B, N, C = dst.shape
    M = index.shape[1]
    if B * M * C == 0:
        return dst
    if src is None:
        src, src_strides = dst, (0, 0, 0)  # any valid pointer; never read in _ZERO mode
    else:
        src_strides = src.stride()
    bc = _block_c(C)
    _scatter_kernel[(B * M, triton.cdiv(C, bc))](dst, index, src, N, M, C, *dst.stride(), *index.stride(),
                                                 *src_strides, BLOCK_C=bc, MODE=mode, num_warps=_num_warps(bc))
    return dst


def _scatter_add(index: torch.Tensor, src: torch.Tensor, n: int) -> torch.Tensor:
    """``zeros(B, n, C).scatter_add(1, index, src)``, accumulated in ≥ fp32 (atomics on 16-bit floats are
    slow or unsupported on some GPUs, and summing duplicates in fp32 is more accurate)."""
    B, _, C = src.shape
    acc_dtype = torch.float64 if src.dtype == torch.float64 else torch.float32
    acc = torch.zeros((B, n, C), dtype=acc_dtype, device=src.device)
    _scatter_(acc, index, src, _ADD)
    return acc if src.dtype == acc_dtype else acc.to(src.dtype)


class TritonGather(torch.autograd.Function):
    """``out[b, m] = x[b, index[b, m]]``; backward scatter-adds the gradient."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.n = x.shape[1]
        return _gather(x, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return _scatter_add(index, grad, ctx.n), None


class TritonScatter(torch.autograd.Function):
    """Copy of ``base`` with ``out[b, index[b, m]] = src[b, m]`` (indices unique per row)."""

    @staticmethod
    def forward(ctx, base, index, src):
        ctx.save_for_backward(index)
        out = base.clone(memory_format=torch.contiguous_format)
        return _scatter_(out, index, src, _STORE)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        grad_base = grad_src = None
        if ctx.needs_input_grad[0]:
            grad_base = _scatter_(grad.clone(memory_format=torch.contiguous_format), index, None, _ZERO)
        if ctx.needs_input_grad[2]:
            grad_src = _gather(grad, index)
        return grad_base, None, grad_src


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Triton gather on validated inputs (see ``panderm_kernels.gather_tokens``)."""
    return TritonGather.apply(x, index)


def scatter_tokens(base: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Triton scatter on validated inputs (see ``panderm_kernels.scatter_tokens``)."""
    return TritonScatter.apply(base, index, src)
