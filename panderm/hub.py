"""Opt-in ``hf-hub:org/repo[/file]`` weights, only when huggingface_hub is installed (the ``hfhub`` plugin forwards it).

Never used by tests and never on by default: a plain name or path resolves
without it, and ``HF_HUB_OFFLINE=1`` keeps it to the local cache.
"""

from __future__ import annotations

from pathlib import Path

from panderm.errors import ConfigError, InputError

PREFIX = "hf-hub:"


def resolve_hf_hub(spec: str) -> Path | None:
    """A local path for ``hf-hub:org/repo[/file]`` (downloaded or cached by huggingface_hub); ``None`` for other specs."""
    if not spec.startswith(PREFIX):
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ConfigError(f"'{spec}' needs huggingface_hub",
                                  hint="pip install 'panderm[hub]', or download the file and pass its path") from None
    repo, _, filename = spec[len(PREFIX):].partition("/")
    parts = spec[len(PREFIX):].split("/")
    if len(parts) < 2:
        raise ConfigError(f"bad hub spec '{spec}'", hint="use hf-hub:org/repo or hf-hub:org/repo/file.pth")
    repo_id = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or "model.safetensors"
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as exc:  # network and auth failures come in many types
        raise InputError(f"could not fetch {filename} from {repo_id}: {type(exc).__name__}: {exc}",
                                 hint="download it yourself and pass the local path") from None
