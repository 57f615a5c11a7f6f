"""Benchmark: panderm_kernels Triton attention and token gather/scatter vs PyTorch (CUDA only).

Attention (forward, forward+backward) at ViT-L shapes against SDPA's flash and math backends
(targets: ≥ 0.9x flash, ≥ 2x math); token gather/scatter against boolean-mask indexing
(target: gather ≥ 1.5x). Every kernel is checked against the reference before it is timed;
the exit status is 1 if any check fails. Without a CUDA device it prints why and exits 0.

Usage::

    python benchmarks/kernels.py                      # B=64 H=16 N=99,197 Dh=64, bf16 + fp16
    python benchmarks/kernels.py --seq 197 --dtypes bf16 --rep 200
    TRITON_INTERPRET=1 python benchmarks/kernels.py --smoke   # CPU dry run of every code path, tiny shapes
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # SDPA's flash backend has no fp32


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes")


def _skip_reason(smoke: bool) -> str | None:
    import torch

    if smoke:
        return None if _interpreting() else "--smoke needs TRITON_INTERPRET=1"
    if _interpreting():
        return "TRITON_INTERPRET is set (interpreter timings are meaningless; use --smoke for a dry run)"
    if not torch.cuda.is_available():
        return "no CUDA device (the Triton kernels only run on GPU; tests cover them on CPU via the interpreter)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install 'panderm[gpu]')"
    return None


def _rel_diff(a, b) -> float:
    """Max abs difference relative to the reference's scale (≥ 1): comparable across outputs and grads."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def _report(name: str, ms: dict[str, float], ours: str, targets: dict[str, float]) -> bool:
    """Print timings and speedups of ``ours`` over each baseline; True if all targets are met."""
    parts = [f"{k} {v:8.3f} ms" for k, v in ms.items()]
    ok = True
    for base, target in targets.items():
        ratio = ms[base] / ms[ours]
        met = ratio >= target
        ok &= met
        parts.append(f"{ours}/{base} {ratio:5.2f}x (target {target}x: {'met' if met else 'MISSED'})")
    print(f"  {name:<22} " + " | ".join(parts))
    return ok


def bench_attention(args, dtype, n: int, bench) -> tuple[bool, bool]:
    """Returns (correct, targets met) for one dtype and sequence length."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import panderm_kernels as pk

    B, H, D = args.batch, args.heads, args.head_dim
    gen = torch.Generator(device=args.device).manual_seed(0)
    q, k, v = (torch.randn(B, H, n, D, device=args.device, dtype=dtype, generator=gen).requires_grad_() for _ in range(3))
    do = torch.randn(B, H, n, D, device=args.device, dtype=dtype, generator=gen)

    def triton_attn():
        return pk.attention(q, k, v, backend="triton")

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v)

    # Correctness first (this also runs the autotuner once per kernel, outside the timings).
    out = triton_attn()
    grads = torch.autograd.grad(out, (q, k, v), do)
    with sdpa_kernel(SDPBackend.MATH):  # fp32 reference from the same low-precision inputs
        q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
        ref = F.scaled_dot_product_attention(q32, k32, v32)
        ref_grads = torch.autograd.grad(ref, (q32, k32, v32), do.float())
    diffs = [_rel_diff(a, b) for a, b in zip((out, *grads), (ref, *ref_grads))]
    correct = max(diffs) < 2e-2
    print(f"  check vs fp32 math SDPA: max rel diff out {diffs[0]:.2e}, dq {diffs[1]:.2e}, dk {diffs[2]:.2e}, "
          f"dv {diffs[3]:.2e} -> {'ok' if correct else 'FAILED'}")

    def fwd_bwd(fn):
        def step():
            o = fn()
            torch.autograd.grad(o, (q, k, v), do)
        return step

    ok = True
    for label, make in (("forward", lambda fn: fn), ("forward+backward", fwd_bwd)):
        ms = {"triton": bench(make(triton_attn))}
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ms["flash"] = bench(make(sdpa))
        with sdpa_kernel(SDPBackend.MATH):
            ms["math"] = bench(make(sdpa))
        ok &= _report(label, ms, "triton", {"flash": 0.9, "math": 2.0})
    return correct, ok


def bench_tokens(args, dtype, bench) -> tuple[bool, bool]:
    """Gather/scatter of M of N tokens per image vs boolean-mask indexing."""
    import torch

    import panderm_kernels as pk

    B, N, M, C = args.batch, args.tokens, args.keep, args.channels
    gen = torch.Generator(device=args.device).manual_seed(0)
    x = torch.randn(B, N, C, device=args.device, dtype=dtype, generator=gen)
    src = torch.randn(B, M, C, device=args.device, dtype=dtype, generator=gen)
    # Sorted indices so that mask indexing (always in token order) selects the same rows.
    index = torch.rand(B, N, device=args.device, generator=gen).argsort(1)[:, :M].sort(1).values
    mask = torch.zeros(B, N, dtype=torch.bool, device=args.device).scatter_(1, index, True)

    def mask_gather():
        return x[mask].view(B, M, C)

    def mask_scatter():
        out = x.clone()
        out[mask] = src.reshape(-1, C)
        return out

    def triton_gather():
        return pk.gather_tokens(x, index, backend="triton", check_index=False)

    def triton_gather_checked():
        return pk.gather_tokens(x, index, backend="triton")

    def triton_scatter():
        return pk.scatter_tokens(x, index, src, backend="triton", check_index=False)

    correct = torch.equal(triton_gather(), mask_gather()) and torch.equal(triton_scatter(), mask_scatter())
    xg = x.detach().requires_grad_()
    up = torch.randn(B, M, C, device=args.device, dtype=dtype, generator=gen)
    (g_ours,) = torch.autograd.grad(pk.gather_tokens(xg, index, backend="triton"), xg, up)
    (g_ref,) = torch.autograd.grad(xg[mask].view(B, M, C), xg, up)
    correct &= torch.equal(g_ours, g_ref)  # unique indices: the scatter-add is exact
    print(f"  check vs mask indexing (gather, scatter, gather backward): {'exact' if correct else 'FAILED'}")

    ok = _report("gather", {"triton": bench(triton_gather), "triton+check": bench(triton_gather_checked),
                            "torch.gather": bench(lambda: torch.gather(x, 1, index[..., None].expand(-1, -1, C))),
                            "mask": bench(mask_gather)}, "triton", {"mask": 1.5})
    _report("scatter", {"triton": bench(triton_scatter), "mask": bench(mask_scatter)}, "triton", {"mask": 1.0})

    def backward(fn):
        def step():
            torch.autograd.grad(fn(xg), xg, up)
        return step

    _report("gather fwd+bwd", {
        "triton": bench(backward(lambda t: pk.gather_tokens(t, index, backend="triton", check_index=False))),
        "mask": bench(backward(lambda t: t[mask].view(B, M, C)))}, "triton", {"mask": 1.0})
    return correct, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seq", type=int, nargs="+", default=[99, 197], help="attention sequence lengths")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16"])
    parser.add_argument("--tokens", type=int, default=197, help="N for gather/scatter")
    parser.add_argument("--keep", type=int, default=99, help="M (tokens kept) for gather/scatter")
    parser.add_argument("--channels", type=int, default=1024, help="C for gather/scatter")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    parser.add_argument("--rep", type=int, default=100, help="do_bench repetition time, ms")
    parser.add_argument("--skip-attention", action="store_true")
    parser.add_argument("--skip-tokens", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU dry run under TRITON_INTERPRET=1 at tiny shapes: checks the script, not the speed")
    args = parser.parse_args()

    reason = _skip_reason(args.smoke)
    if reason:
        print(f"benchmarks/kernels.py: skipped: {reason}")
        return 0

    import torch
    import triton

    if args.smoke:
        args.device, args.batch, args.heads, args.seq, args.dtypes = "cpu", 1, 2, [19], ["bf16"]
        args.tokens, args.keep, args.channels = 13, 6, 40

        def bench(fn) -> float:  # one timed call: do_bench needs CUDA
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3

        print("smoke run on CPU (Triton interpreter): timings and targets are meaningless")
    else:
        from triton.testing import do_bench

        args.device = "cuda"

        def bench(fn) -> float:
            return do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median")

        print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    all_correct, all_met = True, True
    for name in args.dtypes:
        dtype = getattr(torch, DTYPES[name])
        if not args.skip_attention:
            for n in args.seq:
                print(f"attention {name} B={args.batch} H={args.heads} N={n} Dh={args.head_dim}")
                correct, met = bench_attention(args, dtype, n, bench)
                all_correct &= correct
                all_met &= met
        if not args.skip_tokens:
            print(f"tokens {name} B={args.batch} N={args.tokens} M={args.keep} C={args.channels}")
            correct, met = bench_tokens(args, dtype, bench)
            all_correct &= correct
            all_met &= met
    print(f"summary: correctness {'ok' if all_correct else 'FAILED'}; targets {'all met' if all_met else 'not all met'}")
    return 0 if all_correct else 1


if __name__ == "__main__":
    sys.exit(main())
