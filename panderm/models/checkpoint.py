"""Checkpoint I/O: read safely, split encoder from pretraining keys, load strictly.

Reads only ``torch.load(weights_only=True)`` or safetensors, so no code in a
checkpoint ever runs. Accepts the released layout (flat, ``encoder.``-prefixed
CAE v2 state dict), wrapped variants (``model``/``module``/``state_dict``), our
own safetensors export and timm-layout ViT state dicts.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from panderm.errors import CheckpointError

WRAPPER_KEYS = ("model", "module", "state_dict")
#: Top-level prefixes of the CAE v2 pretraining model that are not part of the encoder.
PRETRAIN_ONLY_PREFIXES = ("mask_token", "rd_pos_embed", "regresser.", "decoder.", "teacher.",
                          "encoder_to_regresser", "head.", "lm_head.", "projector.")
#: Model keys a checkpoint may legitimately lack: task heads, fine-tune-only parameters, and the
#: fixed sin-cos ``pos_embed`` (rebuilt exactly by the model; some dumps leave it out).
ALLOWED_MISSING = re.compile(
    r"^(head\.|fc_norm\.|pos_embed$|.*relative_position_bias_table$|.*relative_position_index$)")


@dataclass
class LoadReport:
    """What a strict load did."""

    path: str
    loaded: int = 0
    dropped: Counter = field(default_factory=Counter)
    layout: str = "panderm"
    notes: list[str] = field(default_factory=list)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} encoder tensors from {Path(self.path).name} ({self.layout} layout)"]
        if self.dropped:
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items()))
            parts.append(f"dropped {self.dropped_total} pretraining-only tensors ({detail})")
        return "; ".join(parts + self.notes)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``path`` without executing any pickled code.

    ``path`` may also be a timm export folder holding ``model.safetensors``.

    Raises:
        CheckpointError: missing/corrupt file, or a pickle that needs arbitrary code.
    """
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():  # a timm export folder
        path = path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} needs arbitrary pickle to load and was refused; no code from it ran. "
            f"Detail: {_unpickling_detail(exc)}",
            hint="re-save it as a plain state dict in an environment you trust: "
                 "torch.save({k: v for k, v in sd.items() if torch.is_tensor(v)}, 'clean.pth'), "
                 "or convert it to safetensors",
        ) from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes reach the unpickler as IndexError, KeyError, ...
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'truncated or corrupt'})") from None
    return _unwrap(obj, path)


def _unpickling_detail(exc: Exception) -> str:
    """The line of torch's refusal that says what the file wanted (not its advice to load it unsafely)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    wanted = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln]
    return (wanted or lines or ["unsupported pickle content"])[0][:300]


def state_mismatches(target: dict, sd: dict) -> tuple[list[str], list[str], list[str]]:
    """Keys of ``target`` missing from ``sd``, keys of ``sd`` it does not have, and shared keys of another shape."""
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [k for k in sd if k in target and tuple(sd[k].shape) != tuple(target[k].shape)]
    return missing, unexpected, mismatched


def load_module_weights(module: torch.nn.Module, path: str | Path, what: str = "model") -> None:
    """Load a state dict that panderm saved (a run's ``model.pt``, ``checkpoint-best.pth``) into ``module``, exactly.

    Raises:
        CheckpointError: unreadable or unsafe file, or keys/shapes that do not match ``module``.
    """
    sd = read_state_dict(path)
    missing, unexpected, mismatched = (sorted(keys) for keys in state_mismatches(module.state_dict(), sd))
    if missing or unexpected or mismatched:
        parts = [f"{label}: {_compress(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)) if keys]
        raise CheckpointError(f"{path} does not fit this {what}: " + "; ".join(parts),
                              hint="pass the weights file that this run or command wrote")
    module.load_state_dict(sd, strict=True)


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors",
                              hint=f"expected a state dict, possibly wrapped in one of {WRAPPER_KEYS}")
    if all(k.startswith("module.") for k in tensors):  # DDP-saved
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _is_timm_layout(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith("attn.qkv.bias") or ".ls1." in k for k in sd)


def split_encoder_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Counter, list[str]]:
    """Split a raw state dict into (encoder tensors without prefix, dropped counts, unknown keys)."""
    prefixed = any(k.startswith("encoder.") for k in sd)
    encoder, dropped, unknown = {}, Counter(), []
    for key, value in sd.items():
        if prefixed and key.startswith("encoder."):
            encoder[key[len("encoder."):]] = value
            continue
        group = next((p.rstrip(".") for p in PRETRAIN_ONLY_PREFIXES if key.startswith(p)), None)
        if group is not None:
            dropped[group] += 1
        elif prefixed:
            unknown.append(key)
        else:
            encoder[key] = value
    return encoder, dropped, unknown


def from_timm_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a timm ViT state dict to the PanDerm layout (``qkv.bias`` → q/v bias, ``ls*`` → gamma)."""
    out = {}
    for key, value in sd.items():
        if key.endswith("attn.qkv.bias"):
            q, k, v = value.chunk(3)
            if k.abs().max() > 0:
                raise CheckpointError(f"'{key}' has a non-zero k bias, which the PanDerm encoder cannot represent")
            stem = key[: -len("qkv.bias")]
            out[stem + "q_bias"], out[stem + "v_bias"] = q.clone(), v.clone()
        elif ".ls1.gamma" in key or ".ls2.gamma" in key:
            out[key.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2")] = value
        else:
            out[key] = value
    return out


def to_timm_layout(sd: dict[str, torch.Tensor], global_pool: str = "token") -> dict[str, torch.Tensor]:
    """Convert a PanDerm encoder state dict to timm ``VisionTransformer`` keys (docs/reference/checkpoints.md#23-official-to-timm-visiontransformer-mapping)."""
    out = {}
    for key, value in sd.items():
        if key.endswith("attn.q_bias"):
            v_bias = sd[key[: -len("q_bias")] + "v_bias"]
            out[key[: -len("q_bias")] + "qkv.bias"] = torch.cat([value, torch.zeros_like(v_bias), v_bias])
        elif key.endswith("attn.v_bias") or "relative_position" in key:
            continue
        elif key.endswith(".gamma_1") or key.endswith(".gamma_2"):
            out[key.replace(".gamma_1", ".ls1.gamma").replace(".gamma_2", ".ls2.gamma")] = value
        elif key.startswith("norm.") and global_pool == "avg":
            out["fc_" + key] = value
        else:
            out[key] = value
    return {k: v.contiguous() for k, v in out.items()}


def _compress(keys: list[str], limit: int = 12) -> str:
    """Summarise keys like ``blocks.{12..23}.attn.qkv.weight`` so messages stay one paragraph."""
    groups: dict[str, list[int]] = {}
    singles = []
    for key in keys:
        m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if m:
            groups.setdefault(m.group(2), []).append(int(m.group(1)))
        else:
            singles.append(key)
    items = singles + [
        f"blocks.{{{min(v)}..{max(v)}}}.{rest}" if len(v) > 1 else f"blocks.{v[0]}.{rest}"
        for rest, v in sorted(groups.items())
    ]
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def describe_architecture(sd: dict[str, torch.Tensor]) -> str | None:
    """Guess width and depth of an encoder state dict, for error hints."""
    cls = sd.get("cls_token")
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))), default=-1)
    if cls is None or depth <= 0:
        return None
    width = cls.shape[-1]
    known = {(1024, 24): "panderm_large_patch16_224", (768, 12): "panderm_base_patch16_224"}
    name = known.get((width, depth))
    return f"embed dim {width}, depth {depth}" + (f" (looks like {name})" if name else "")


def load_encoder_state(model: torch.nn.Module, path: str | Path) -> LoadReport:
    """Load encoder weights from ``path`` into ``model`` strictly.

    Every encoder parameter of ``model`` (except task heads, fine-tune-only
    relative position bias and an ``fc_norm`` created from ``norm``) must be in
    the checkpoint with the same shape, and the checkpoint may hold no unknown
    keys beyond the known pretraining-only ones.

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped keys.
    """
    report = LoadReport(path=str(path))
    raw = read_state_dict(path)
    if _is_timm_layout(raw):
        report.layout = "timm"
        raw = from_timm_layout(raw)
    encoder, report.dropped, unknown = split_encoder_keys(raw)
    if not any(k.startswith("encoder.") for k in raw):
        report.layout = report.layout if report.layout == "timm" else "unprefixed"
    else:
        report.layout = "released (encoder.-prefixed)"

    target = model.state_dict()
    if getattr(model, "global_pool", "token") == "avg" and "norm.weight" in encoder and "fc_norm.weight" not in encoder:
        # Fine-tuning pools patch tokens through fc_norm, initialised from the pretrained final norm.
        encoder["fc_norm.weight"] = encoder.pop("norm.weight")
        encoder["fc_norm.bias"] = encoder.pop("norm.bias")
        report.notes.append("norm.* copied to fc_norm.* for mean pooling")
    for key in [k for k in encoder if k.startswith("head.")]:
        if key not in target or target[key].shape != encoder[key].shape:
            encoder.pop(key)
            report.dropped["head"] += 1

    missing = [k for k in target if k not in encoder and not ALLOWED_MISSING.match(k)]
    unexpected = unknown + [k for k in encoder if k not in target]
    mismatched = [f"{k}: checkpoint {list(encoder[k].shape)} vs model {list(target[k].shape)}"
                  for k in encoder if k in target and encoder[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: {_compress(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {_compress(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches: {'; '.join(mismatched[:4])}"
                            + (" …" if len(mismatched) > 4 else ""))
        arch = describe_architecture(encoder)
        model_arch = f"embed dim {getattr(model, 'embed_dim', '?')}, depth {len(getattr(model, 'blocks', []))}"
        hint = f"the checkpoint has {arch}; the model has {model_arch}" if arch else \
            "is this a PanDerm / CAE v2 encoder checkpoint?"
        raise CheckpointError(f"checkpoint {path} does not match the model exactly: " + "; ".join(problems) + ".",
                              hint=hint + ". Pick the matching --model.")

    if "pos_embed" in target and "pos_embed" not in encoder:
        report.notes.append("pos_embed not in the checkpoint: using the fixed 2-D sin-cos table")
    if "pos_embed" in encoder and "pos_embed" in target:
        from panderm.models.vit import sincos_pos_embed_2d

        n, dim = encoder["pos_embed"].shape[-2:]
        expected = sincos_pos_embed_2d(int(round((n - 1) ** 0.5)), dim)
        diff = (encoder["pos_embed"].float() - expected).abs().max().item()
        if diff > 1e-4:
            report.notes.append(f"pos_embed differs from the fixed sin-cos table (max {diff:.2g}); using the checkpoint's")
    _check_values(encoder, target, path)
    to_load = {k: v.to(target[k].dtype) for k, v in encoder.items()}
    model.load_state_dict(to_load, strict=False)
    report.loaded = len(to_load)
    return report


def _check_values(encoder: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path) -> None:
    """Refuse integer tensors for float parameters and any NaN/Inf: both would give garbage features silently."""
    for key, value in encoder.items():
        if target[key].is_floating_point() and not value.is_floating_point():
            raise CheckpointError(f"checkpoint {path}: {key} is stored as {value.dtype}, not as floating point",
                                  hint="the file is damaged or was not written as model weights")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"checkpoint {path}: {key} holds NaN or infinite values",
                                  hint="the weights are damaged (or come from a diverged training run)")


def encoder_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors worth exporting (no buffers that are rebuilt, no identity head)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if "relative_position_index" not in k}
