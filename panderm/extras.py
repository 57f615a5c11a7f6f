"""Optional dependencies: which pip extra provides which module (the one map; see pyproject.toml).

The CLI turns a ``ModuleNotFoundError`` for one of these modules into a clean error
naming the extra (:func:`missing_extra_error`); ``panderm doctor`` reports each one's
version (:data:`OPTIONAL_MODULES`).
"""

from __future__ import annotations

from panderm.errors import ConfigError

#: import name → (distribution name, pip extra of ``panderm`` that installs it; ``None``: no extra, reported only).
OPTIONAL_MODULES: dict[str, tuple[str, str | None]] = {
    "open_clip": ("open_clip_torch", "train"),
    "openslide": ("openslide-python", "slide"),
    "tifffile": ("tifffile", "slide"),
    "lifelines": ("lifelines", "survival"),
    "sksurv": ("scikit-survival", "survival"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "multipart": ("python-multipart", "serve"),
    "python_multipart": ("python-multipart", "serve"),
    "huggingface_hub": ("huggingface_hub", "hub"),
    "triton": ("triton", "gpu"),
    "xformers": ("xformers", None),  # nothing uses it: attention runs on our kernels or torch SDPA
    "playwright": ("playwright", "dev"),
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (or its top-level package), or ``None`` if it is not optional."""
    if not module:
        return None
    entry = OPTIONAL_MODULES.get(module.split(".")[0])
    return entry[1] if entry else None


def install_hint(extra: str) -> str:
    return f"pip install 'panderm[{extra}]'"


def missing_extra_error(exc: BaseException, command: str | None = None) -> ConfigError | None:
    """A ConfigError naming the extra when ``exc`` is a missing optional module, else ``None``.

    Args:
        exc: The exception a command raised.
        command: The command's name for the message (``"serve"`` → "`panderm serve` needs ...").
    """
    if not isinstance(exc, ModuleNotFoundError):
        return None
    extra = extra_for(exc.name)
    if extra is None:
        return None
    who = f"`panderm {command}`" if command else "this command"
    return ConfigError(f"{who} needs the {extra} extra ({exc.name.split('.')[0]} is not installed)",
                       hint=f"install it with: {install_hint(extra)}")
