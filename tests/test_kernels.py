"""panderm_kernels: dispatch, input checks, torch backend == reference, Triton kernels vs reference.

The Triton checks run on CPU under the Triton interpreter. ``TRITON_INTERPRET`` must be set
before the kernels are defined and would leak into other tests (or be too late if something
already imported them), so each check group runs in a fresh subprocess: this very file run
as ``python tests/test_kernels.py GROUP``, which prints one JSON result per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

import panderm_kernels as pk
from panderm_kernels import dispatch, reference

TRITON = dispatch.triton_importable()


@pytest.fixture
def kernels_env(monkeypatch):
    """Fresh ``PANDERM_KERNELS`` parsing, no interpreter, restored afterwards."""
    monkeypatch.delenv("PANDERM_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    dispatch.env_mode.cache_clear()
    yield monkeypatch
    dispatch.env_mode.cache_clear()


# ----------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("value, mode", [(None, "auto"), ("", "auto"), ("auto", "auto"), ("torch", "torch"),
                                         (" Triton ", "triton")])
def test_parse_mode(value, mode):
    assert dispatch.parse_mode(value) == mode


def test_env_mode_unknown_value_names_allowed(kernels_env):
    kernels_env.setenv("PANDERM_KERNELS", "cuda")
    with pytest.raises(ValueError, match="auto, torch, triton"):
        dispatch.env_mode()


def test_env_mode_is_read_once(kernels_env):
    kernels_env.setenv("PANDERM_KERNELS", "torch")
    assert dispatch.env_mode() == "torch"
    kernels_env.setenv("PANDERM_KERNELS", "triton")
    assert dispatch.env_mode() == "torch"


def test_auto_is_torch_on_cpu(kernels_env):
    assert pk.resolve_backend("auto", "cpu") == "torch"
    choice = pk.choose_backend(torch.device("cpu"))
    assert choice is pk.KernelChoice.TORCH and choice == "torch" and str(choice) == "torch"
    assert pk.resolve_backend(choice, "cpu") == "torch"  # a cached choice round-trips


def test_env_torch_forces_torch_even_for_cuda(kernels_env):
    kernels_env.setenv("PANDERM_KERNELS", "torch")
    assert pk.resolve_backend("auto", "cuda") == "torch"
    assert pk.choose_backend("cuda") == "torch"


def test_auto_prefers_triton_on_cuda(kernels_env):
    # No GPU is needed to decide: the choice depends only on the device type and the install.
    assert pk.resolve_backend("auto", "cuda") == ("triton" if TRITON else "torch")


def test_unknown_backend_argument():
    with pytest.raises(ValueError, match="auto, torch, triton"):
        pk.resolve_backend("cudnn", "cpu")
    x = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="backend='xla'"):
        pk.attention(x, x, x, backend="xla")


@pytest.mark.skipif(not TRITON, reason="triton not installed")
def test_forced_triton_on_cpu_without_interpreter_is_clear_error(kernels_env):
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        pk.resolve_backend("triton", "cpu")
    kernels_env.setenv("PANDERM_KERNELS", "triton")
    x = torch.randn(1, 4, 8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        pk.gather_tokens(x, torch.zeros(1, 2, dtype=torch.long))


def test_available_backends(kernels_env):
    assert pk.available_backends("cpu") == ("torch",)
    assert pk.available_backends() == (("torch", "triton") if TRITON else ("torch",))


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("bad", [-1, 6])
def test_out_of_range_index_is_value_error(bad):
    x = torch.randn(2, 6, 4)
    index = torch.tensor([[0, 1], [2, bad]])
    with pytest.raises(ValueError, match=r"\[0, 6\).*" + str(bad)):
        pk.gather_tokens(x, index)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        pk.scatter_tokens(x, index, torch.randn(2, 2, 4))


def test_index_shape_and_dtype_errors():
    x = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="int64"):
        pk.gather_tokens(x, torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\(B, M\)"):
        pk.gather_tokens(x, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        pk.gather_tokens(x[0], torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="src must have shape"):
        pk.scatter_tokens(x, torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="dtype|float64"):
        pk.scatter_tokens(x, torch.zeros(2, 1, dtype=torch.long), torch.randn(2, 1, 4, dtype=torch.float64))


def test_empty_index_m0():
    x = torch.randn(2, 5, 3, requires_grad=True)
    index = torch.empty(2, 0, dtype=torch.long)
    out = pk.gather_tokens(x, index)
    assert out.shape == (2, 0, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    y = pk.scatter_tokens(x, index, torch.empty(2, 0, 3))
    assert torch.equal(y, x)


# ----------------------------------------------------------------------------- torch == reference


def _grads(fn, inputs, upstream):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, [t for t in leaves if t.requires_grad], upstream(out))
    return out, grads


def test_torch_backend_is_reference_exactly():
    g = torch.Generator().manual_seed(0)
    up = lambda out: torch.randn(out.shape, generator=torch.Generator().manual_seed(1))  # noqa: E731
    q, k, v = (torch.randn(2, 3, 11, 16, generator=g) for _ in range(3))
    for scale in (None, 0.3):
        a = _grads(lambda q, k, v: pk.attention(q, k, v, scale, backend="torch"), (q, k, v), up)
        b = _grads(lambda q, k, v: reference.attention(q, k, v, scale), (q, k, v), up)
        assert torch.equal(a[0], b[0]) and all(map(torch.equal, a[1], b[1]))

    x, index = torch.randn(2, 9, 5, generator=g), torch.stack([torch.randperm(9, generator=g)[:4] for _ in range(2)])
    a = _grads(lambda x: pk.gather_tokens(x, index, backend="torch"), (x,), up)
    b = _grads(lambda x: reference.gather_tokens(x, index), (x,), up)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1][0], b[1][0])

    src = torch.randn(2, 4, 5, generator=g)
    a = _grads(lambda x, s: pk.scatter_tokens(x, index, s, backend="torch"), (x, src), up)
    b = _grads(lambda x, s: reference.scatter_tokens(x, index, s), (x, src), up)
    assert torch.equal(a[0], b[0]) and all(map(torch.equal, a[1], b[1]))


def test_auto_on_cpu_matches_reference(kernels_env):
    x = torch.randn(1, 2, 7, 8)
    assert torch.equal(pk.attention(x, x, x), reference.attention(x, x, x))


# ----------------------------------------------------------------------------- Triton (interpreter)

# Each group is one subprocess (interpreter start-up is ~2 s, so groups are few and mixed).
GROUPS = ["attention-float32,api", "attention-bfloat16,attention-float16", "tokens-float32,tokens-bfloat16"]


@pytest.mark.skipif(not TRITON, reason="triton not installed")
@pytest.mark.parametrize("group", GROUPS)
def test_triton_interpreter(group):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PANDERM_KERNELS": "auto", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, group], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert results, proc.stdout[-2000:] + proc.stderr[-2000:]
    failed = [r for r in results if not r["ok"]]
    assert not failed, "\n".join(f"{r['case']}: {r['detail']}" for r in failed)


@pytest.mark.skipif(not TRITON, reason="triton not installed")
def test_benchmark_script_smoke():
    """benchmarks/kernels.py runs every code path (CPU, interpreter, tiny shapes) and skips cleanly."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "kernels.py"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), "--smoke"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "correctness ok" in proc.stdout, proc.stdout[-2000:]
    if torch.cuda.is_available():
        return  # without the interpreter it would run the real (minutes-long) benchmark
    env.pop("TRITON_INTERPRET")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "skipped" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def _ptxas_available() -> bool:
    if not TRITON:
        return False
    import triton

    return bool(os.environ.get("TRITON_PTXAS_PATH")) or (
        Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.mark.skipif(not _ptxas_available(), reason="triton's bundled ptxas not found")
def test_kernels_compile_for_hopper(tmp_path):
    """Compile every kernel for sm_90 without a GPU: catches what the interpreter can't (typing, lowering)."""
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, __file__, "--compile-sm90"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


# ------------------------------------------------------------ the checks (subprocess side)

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs error relative to the reference's scale (≥ 1), robust to grads of any size."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / max(1.0, float(want.abs().max())))


def _check_close(name, got, want, tol):
    errs = [_rel_err(a, b) for a, b in zip(got, want)]
    if any(e != e or e > tol for e in errs):  # e != e catches NaN
        raise AssertionError(f"{name}: errors {errs} > {tol}")


def _attention_case(dtype, B, H, NQ, NKV, D, scale=None, packed=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if packed:  # q, k, v as strided views of one (B, N, 3, H, D) projection, as in a ViT block
        qkv = torch.randn(B, NQ, 3, H, D, generator=g).to(dtype).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
    else:
        q = torch.randn(B, H, NQ, D, generator=g).to(dtype)
        k, v = (torch.randn(B, H, NKV, D, generator=g).to(dtype) for _ in range(2))
    up = torch.randn(B, H, NQ, D, generator=g)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]  # detach keeps the (strided) layout
    out = pk.attention(*leaves, scale=scale, backend="triton")
    grads = torch.autograd.grad(out, leaves, up.to(dtype))
    ref_leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = reference.attention(*ref_leaves, scale=scale)
    ref_grads = torch.autograd.grad(ref, ref_leaves, up)
    assert out.dtype == dtype and out.shape == (B, H, NQ, D)
    assert all(gr.dtype == dtype for gr in grads)
    _check_close("out+grads", (out, *grads), (ref, *ref_grads), TOL[dtype])


def _tokens_case(dtype, B, N, M, C, repeats=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C, generator=g).to(dtype)
    if repeats:
        index = torch.randint(0, N, (B, M), generator=g)
    else:
        index = torch.stack([torch.randperm(N, generator=g)[:M] for _ in range(B)])
    up = torch.randn(B, M, C, generator=g).to(dtype)
    xl = x.clone().requires_grad_()
    out = pk.gather_tokens(xl, index, backend="triton")
    (gx,) = torch.autograd.grad(out, xl, up)
    xr = x.double().requires_grad_()
    ref = reference.gather_tokens(xr, index)
    (gxr,) = torch.autograd.grad(ref, xr, up.double())
    assert torch.equal(out, reference.gather_tokens(x, index)), "gather forward must be an exact copy"
    _check_close("gather grad", (gx,), (gxr,), 1e-6 if dtype == torch.float32 else TOL[dtype])
    if repeats:
        return
    src = torch.randn(B, M, C, generator=g).to(dtype)
    up = torch.randn(B, N, C, generator=g).to(dtype)
    leaves = [x.clone().requires_grad_(), src.clone().requires_grad_()]
    out = pk.scatter_tokens(leaves[0], index, leaves[1], backend="triton")
    grads = torch.autograd.grad(out, leaves, up)
    ref_leaves = [x.clone().requires_grad_(), src.clone().requires_grad_()]
    ref = reference.scatter_tokens(ref_leaves[0], index, ref_leaves[1])
    ref_grads = torch.autograd.grad(ref, ref_leaves, up)
    # Pure data movement: exact in every dtype.
    assert torch.equal(out, ref) and all(map(torch.equal, grads, ref_grads)), "scatter mismatch"


def _cases(group):
    kind, _, dtype_name = group.partition("-")
    if kind == "attention":
        dtype = getattr(torch, dtype_name)
        yield "N=37 D=64", lambda: _attention_case(dtype, 1, 2, 37, 37, 64)
        yield "B=2 N=17 D=16 scale=0.3", lambda: _attention_case(dtype, 2, 2, 17, 17, 16, scale=0.3)
        yield "N=40 D=32 packed qkv", lambda: _attention_case(dtype, 1, 2, 40, 40, 32, packed=True)
        if dtype == torch.float32:
            yield "N=5 D=128", lambda: _attention_case(dtype, 1, 1, 5, 5, 128)
            yield "N=16 D=24 (padded)", lambda: _attention_case(dtype, 1, 2, 16, 16, 24)
            yield "NQ=19 NKV=33", lambda: _attention_case(dtype, 1, 2, 19, 33, 32)
            yield "N=1", lambda: _attention_case(dtype, 1, 2, 1, 1, 16)
    elif kind == "tokens":
        dtype = getattr(torch, dtype_name)
        yield "N=37 M=11 C=70", lambda: _tokens_case(dtype, 2, 37, 11, 70)
        yield "N=16 M=16 C=8 (permutation)", lambda: _tokens_case(dtype, 1, 16, 16, 8)
        yield "repeated indices (scatter-add)", lambda: _tokens_case(dtype, 2, 9, 20, 33, repeats=True)
    else:
        yield "api", _api_checks


def _api_checks():
    x = torch.randn(2, 6, 4)
    assert pk.available_backends("cpu") == ("torch", "triton")
    assert pk.choose_backend("cpu") == "torch", "auto must stay on torch for CPU tensors"
    try:
        pk.gather_tokens(x, torch.tensor([[0, 1], [2, 6]]), backend="triton")
        raise AssertionError("out-of-range index accepted")
    except ValueError:
        pass
    # Unchecked out-of-range rows are skipped by the kernel, never read out of bounds.
    out = pk.gather_tokens(x, torch.tensor([[0, 1], [2, 6]]), backend="triton", check_index=False)
    assert torch.equal(out[1, 1], torch.zeros(4)) and torch.equal(out[0], x[0, :2])
    xe = x.clone().requires_grad_()
    empty = torch.empty(2, 0, dtype=torch.long)
    out = pk.gather_tokens(xe, empty, backend="triton")
    assert out.shape == (2, 0, 4)
    out.sum().backward()
    assert torch.equal(xe.grad, torch.zeros_like(x))
    assert torch.equal(pk.scatter_tokens(x, empty, torch.empty(2, 0, 4), backend="triton"), x)
    q = torch.randn(1, 1, 4, 8, dtype=torch.float64)
    try:
        pk.attention(q, q, q, backend="triton")
        raise AssertionError("float64 accepted by forced triton")
    except ValueError as err:
        assert "float64" in str(err)
    # A cached KernelChoice falls back silently for unsupported inputs.
    assert torch.equal(pk.attention(q, q, q, backend=pk.KernelChoice.TRITON), reference.attention(q, q, q))
    # Non-contiguous upstream gradient (expanded) and a non-contiguous token tensor.
    qf = torch.randn(1, 2, 9, 16, requires_grad=True)
    pk.attention(qf, qf, qf, backend="triton").sum().backward()
    ref = qf.detach().clone().requires_grad_()
    reference.attention(ref, ref, ref).sum().backward()
    assert _rel_err(qf.grad, ref.grad) < 1e-4
    xt = torch.randn(2, 4, 6).transpose(1, 2)  # (2, 6, 4), channel stride ≠ 1
    index = torch.tensor([[5, 0], [3, 3]])
    assert torch.equal(pk.gather_tokens(xt, index, backend="triton"), reference.gather_tokens(xt, index))


def _compile_sm90() -> int:
    """Ahead-of-time compile (no launch) of each kernel for Hopper in a 16-bit and the fp32 variant."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from panderm_kernels import triton_attention as ta
    from panderm_kernels import triton_tokens as tt

    def compile_(kernel, ptr, consts, **options):
        fn = kernel.fn if isinstance(kernel, triton.runtime.autotuner.Autotuner) else kernel
        types = {"LSE": "*fp32", "DELTA": "*fp32", "qk_scale": "fp32", "sm_scale": "fp32", "IDX": "*i64",
                 "DST": "*fp32" if consts.get("MODE") == 2 else ptr}
        pointers = {"Q", "K", "V", "O", "DO", "DQ", "DK", "DV", "X", "OUT", "SRC"}
        sig = {n: "constexpr" if n in consts else types.get(n, ptr if n in pointers else "i32") for n in fn.arg_names}
        src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)

    blocks = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=64)
    for kernel in (ta._attn_fwd, ta._attn_bwd_dkdv, ta._attn_bwd_dq):
        compile_(kernel, "*bf16", dict(blocks, IEEE=False), num_warps=4, num_stages=2)
    compile_(ta._attn_fwd, "*fp32", dict(blocks, IEEE=True), num_warps=4, num_stages=2)  # the fp32 "ieee" dots
    compile_(ta._attn_bwd_delta, "*bf16", dict(BLOCK_M=64, BLOCK_D=64), num_warps=4)
    compile_(tt._gather_kernel, "*bf16", dict(BLOCK_C=1024), num_warps=4)
    for mode in (0, 1, 2):
        compile_(tt._scatter_kernel, "*bf16", dict(BLOCK_C=1024, MODE=mode), num_warps=4)
    print("compiled for sm_90")
    return 0


def _main(group: str) -> int:
    if group == "--compile-sm90":
        return _compile_sm90()
    assert os.environ.get("TRITON_INTERPRET") == "1", "run through the pytest wrapper"
    torch.set_num_threads(1)
    for case, fn in ((f"{g} {c}", fn) for g in group.split(",") for c, fn in _cases(g)):
        try:
            fn()
            print(json.dumps({"case": case, "ok": True, "detail": ""}), flush=True)
        except Exception as err:  # report every case, not just the first failure
            detail = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
            print(json.dumps({"case": case, "ok": False, "detail": detail}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
