"""Environment report for ``panderm doctor``: versions, hardware, extras, weights, plugins."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import sys


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _importable(module: str) -> tuple[bool, str]:
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as exc:  # optional extras may be broken in many ways; report, don't crash
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


#: Optional modules that ``panderm doctor`` reports, in this order (see :mod:`panderm.extras`).
DOCTOR_MODULES = ("open_clip", "openslide", "tifffile", "lifelines", "sksurv", "fastapi", "uvicorn", "playwright",
                  "triton", "xformers", "huggingface_hub")


def optional_dependencies() -> dict[str, dict]:
    """Each optional module: installed version (``None``: not installed), the extra providing it, import errors."""
    from panderm.extras import OPTIONAL_MODULES

    report = {}
    for module in DOCTOR_MODULES:
        dist, extra = OPTIONAL_MODULES[module]
        version = _version(dist)
        ok, why = _importable(module) if version else (False, "")
        report[module] = {"available": ok, "version": version, "distribution": dist, "extra": extra,
                          "error": why or None}
    return report


def describe_extra(info: dict) -> str:
    """One line for the human report: the version, or "not installed (pip install ...)"."""
    from panderm.extras import install_hint

    if info["version"] is None:
        return f"not installed ({install_hint(info['extra'])})" if info["extra"] else "not installed (not used)"
    broken = "" if info["available"] else f"  but import fails: {info['error']}"
    return f"{info['version']}{broken}"


def collect() -> dict:
    """Gather the report as a JSON-serialisable dict."""
    import torch

    from panderm import __version__
    from panderm.config import panderm_home
    from panderm.hardware import cpu_flags, cpu_has_fast_bf16, resolve_precision
    from panderm.plugins import load_failures
    from panderm.weights import list_weights

    flags = cpu_flags()
    cuda = torch.cuda.is_available()
    extras = optional_dependencies()
    return {
        "panderm": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {d: _version(d) for d in ("torch", "torchvision", "timm", "numpy", "scikit-learn",
                                               "safetensors", "pillow", "click", "pluggy", "numba")},
        "cpu": {"machine": platform.machine(), "threads": torch.get_num_threads(),
                "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
                "fast_bf16": cpu_has_fast_bf16(), "auto_precision": resolve_precision("auto", "cpu")},
        "cuda": {"available": cuda, "version": torch.version.cuda,
                 "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []},
        "extras": extras,
        "home": str(panderm_home()),
        "weights": [{"name": r.name, "path": r.path, "exists": r.exists} for r in list_weights()],
        "plugin_failures": load_failures(),
    }
