"""Frozen teachers that give CAE v2 its regression targets (docs/reference/pretraining.md#63-teacher).

Every teacher maps a batch of images, prepared at ``input_size`` with its own
``mean``/``std``, to per-token targets ``[B, (1+)grid², out_dim]``: the CLS
target first when ``has_cls``, then one target per patch in raster order on the
student's 14×14 grid. Teachers are always frozen, in eval mode, run under
``no_grad`` and return float32.

Build one from a spec string with :func:`build_teacher` (``hog``, ``random``,
``openclip:<arch>:<weights file>``, ``timm:<name>:<weights file>``); names
resolve through the plugin teacher registry, so plugins can add more.
Weights are only ever read from local files: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from panderm.errors import ConfigError, InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TRAIN_HINT = "install the pretraining extras: pip install 'panderm[train]'"


class Teacher(nn.Module):
    """Base class: freezing, eval mode and the precision policy.

    Args:
        precision: ``auto`` (bf16 autocast on CUDA and on CPUs with fast bf16,
            see :mod:`panderm.hardware`), ``bf16`` or ``fp32``.
    """

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    out_dim: int = 0
    grid: int = 14
    has_cls: bool = False

    def __init__(self, precision: str = "auto"):
        super().__init__()
        self.precision = precision

    def freeze(self) -> "Teacher":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # a teacher is never in training mode (dropout, BN stats)

    def _autocast(self, device: torch.device):
        from panderm.hardware import resolve_precision

        if resolve_precision(self.precision, device.type) != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (self.input_size,) * 2:
            raise InputError(f"{type(self).__name__} expects [B, 3, {self.input_size}, {self.input_size}], "
                             f"got {list(images.shape)}",
                             hint="prepare the teacher view at the teacher's input_size with its mean/std")

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Subclass hook: raw targets for ``images``."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        with self._autocast(images.device):
            out = self.tokens(images)
        return out.float()

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, out_dim={self.out_dim}, has_cls={self.has_cls}"


class HOGTeacher(Teacher):
    """MaskFeat-style HOG targets; no weights.

    Per RGB channel of the *normalised* image (as MaskFeat): gradients from fixed
    ``[-1, 0, 1]`` filters (reflect padding), unsigned orientation hard-binned
    into ``bins`` bins over [0, π), magnitudes weighted by a Gaussian window
    (σ = patch/2) centred on each 16×16 patch, summed in 8×8 cells and
    L2-normalised per cell. A patch target concatenates its channels × 2×2
    cells × bins (108 values for RGB), ordered (channel, cell row, cell col, bin).

    The per-cell L2 norm makes HOG invariant to any per-channel affine
    normalisation (up to its epsilon), so the student tensor can be used as the
    teacher view directly; ``mean``/``std`` are the PanDerm student values for
    that reason. Always computed in float32 (cheap, and bf16 would quantise the
    angles). Bin 0 holds horizontal gradients, i.e. vertical edges.

    ``color=True`` (default) appends each patch's mean colour on its 2×2 cells
    (12 values of the normalised view) and ``global_token=True`` adds a CLS
    target, the mean of the patch targets: plain HOG carries neither colour nor
    an image-level signal, so the CLS feature that ``extract`` uses is never
    trained and a short run probed worse than a random encoder on HAM10000
    (weighted F1 0.344 vs 0.389). ``hog:plain`` gives the pure MaskFeat targets.

    With ``center=True`` (default) each HOG part has its mean subtracted.
    Raw HOG vectors are all non-negative, so under the cosine loss predicting the
    average histogram already scores ~0.78 similarity and a short run collapses
    onto it (seen: loss flat at 0.22, gradients vanishing); centred targets make
    the constant prediction worthless and force the model to read the image.
    """

    def __init__(self, bins: int = 9, cell: int = 8, patch: int = 16, input_size: int = 224,
                 channels: int = 3, center: bool = True, color: bool = True, global_token: bool = True):
        super().__init__(precision="fp32")
        self.center, self.color, self.has_cls = center, color, global_token
        if patch % cell or input_size % patch:
            raise ConfigError(f"HOG needs cell | patch | input_size, got cell={cell}, patch={patch}, "
                              f"input_size={input_size}")
        self.bins, self.cell, self.patch, self.channels = bins, cell, patch, channels
        self.input_size, self.grid = input_size, input_size // patch
        self.mean, self.std = (0.485, 0.456, 0.406), (0.228, 0.224, 0.225)
        self.hog_dim = channels * (patch // cell) ** 2 * bins
        self.out_dim = self.hog_dim + (3 * (patch // cell) ** 2 if color else 0)
        k = torch.tensor([-1.0, 0.0, 1.0])
        self.register_buffer("kx", k.view(1, 1, 1, 3).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("ky", k.view(1, 1, 3, 1).repeat(channels, 1, 1, 1), persistent=False)
        centre = (patch - 1) / 2
        g1 = torch.exp(-((torch.arange(patch) - centre) ** 2) / (2 * (patch / 2) ** 2))
        window = torch.outer(g1, g1).repeat(self.grid, self.grid)
        self.register_buffer("window", window, persistent=False)
        self.freeze()

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        gx = F.conv2d(x, self.kx, groups=self.channels)[:, :, 1:-1, :]
        gy = F.conv2d(x, self.ky, groups=self.channels)[:, :, :, 1:-1]
        magnitude = torch.sqrt(gx ** 2 + gy ** 2) * self.window
        angle = torch.remainder(torch.atan2(gy, gx), math.pi)  # unsigned orientation in [0, π)
        index = (angle / math.pi * self.bins).floor().long().clamp_(0, self.bins - 1)
        B, C, H, W = magnitude.shape
        hist = magnitude.new_zeros(B, C, self.bins, H, W).scatter_(2, index.unsqueeze(2), magnitude.unsqueeze(2))
        cells = F.avg_pool2d(hist.flatten(1, 2), self.cell, divisor_override=1)  # sum per cell
        cells = F.normalize(cells.view(B, C, self.bins, H // self.cell, W // self.cell), dim=2)
        c = self.patch // self.cell
        # [B, C, bins, G*c, G*c] -> [B, G, G, C, c, c, bins] -> [B, G², C*c*c*bins]
        cells = cells.view(B, C, self.bins, self.grid, c, self.grid, c).permute(0, 3, 5, 1, 4, 6, 2)
        out = cells.reshape(B, self.grid * self.grid, self.hog_dim)
        if self.center:
            out = out - out.mean(dim=-1, keepdim=True)
        if self.color:
            # Mean colour per cell of the normalised view, same (cell row, cell col) order as the HOG cells.
            col = F.avg_pool2d(images.float(), self.cell)
            col = col.view(B, 3, self.grid, c, self.grid, c).permute(0, 2, 4, 1, 3, 5)
            out = torch.cat([out, col.reshape(B, self.grid * self.grid, 3 * c * c)], dim=-1)
        if self.has_cls:
            out = torch.cat([out.mean(dim=1, keepdim=True), out], dim=1)
        return out


class RandomTeacher(Teacher):
    """A frozen random patch projector with a CLS target, for tests and smoke runs only."""

    has_cls = True

    def __init__(self, out_dim: int = 16, seed: int = 0, precision: str = "fp32"):
        super().__init__(precision)
        self.input_size, self.grid, self.out_dim = 224, 14, out_dim
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Conv2d(3, out_dim, 16, 16)
        self.cls_proj = nn.Linear(out_dim, out_dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        self.freeze()

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        patches = torch.tanh(self.proj(images).flatten(2).transpose(1, 2))
        return torch.cat([self.cls_proj(patches.mean(1, keepdim=True)), patches], dim=1)


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not str(path) or not path.is_file():
        raise InputError(f"{what} weights file not found: {path}",
                         hint="pass a local file; teachers never download weights")
    return path


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``load_state_dict(strict=True)`` that names mismatched keys briefly in a ConfigError."""
    from panderm.models.checkpoint import state_mismatches

    target = module.state_dict()
    missing, unexpected, shapes = state_mismatches(target, sd)
    mismatched = [f"{k} {list(sd[k].shape)} vs {list(target[k].shape)}" for k in shapes]
    if missing or unexpected or mismatched:
        parts = [f"{label} {len(keys)}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatches", mismatched)) if keys]
        raise ConfigError(f"{path} does not match the {what} architecture: " + "; ".join(parts),
                          hint="check that the architecture name matches the weights file")
    module.load_state_dict(sd, strict=True)


def is_torchscript_archive(path: str | Path) -> bool:
    """True when ``path`` is a TorchScript archive (a zip with a ``code/`` folder or ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _read_weights(path: Path, trust_torchscript: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a state-dict file (weights_only torch or safetensors: no code runs).

    A TorchScript archive (OpenAI's original CLIP ``.pt``) is refused unless
    ``trust_torchscript``: ``torch.jit.load`` runs the archive's TorchScript code, so it is
    only used when the user vouches for the file (``--trust-torchscript-teacher``).
    """
    from panderm.errors import CheckpointError
    from panderm.models.checkpoint import read_state_dict

    try:
        return read_state_dict(path)
    except CheckpointError as exc:
        if not is_torchscript_archive(path):
            raise
        if not trust_torchscript:
            raise CheckpointError(
                f"{path} is a TorchScript archive; loading one runs the code it contains, so it was refused "
                "(nothing from it ran)",
                hint="convert it once to a plain state dict or safetensors file, or, only if you trust where the "
                     "file came from, pass --trust-torchscript-teacher") from None
        reason = exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except Exception as jit_exc:  # noqa: BLE001 - any failure: report both readers
        raise CheckpointError(f"{path} is neither a readable state dict ({reason.message}) nor a loadable "
                              f"TorchScript archive ({type(jit_exc).__name__})") from None


def _resize_grid_embedding(pos: torch.Tensor, grid: int, prefix: int) -> torch.Tensor:
    """Bilinearly resize a ``[prefix + g², D]`` position table to ``grid × grid`` (prefix rows kept)."""
    head, body = pos[:prefix], pos[prefix:]
    old = int(round(math.sqrt(body.shape[0])))
    if old == grid:
        return pos
    body = body.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    body = F.interpolate(body, size=(grid, grid), mode="bilinear", align_corners=False)
    return torch.cat([head, body.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(pos.dtype)])


#: Keys that only OpenAI's TorchScript CLIP state dicts carry (open_clip drops them when converting).
OPENAI_JIT_KEYS = ("input_resolution", "context_length", "vocab_size")


def _sibling_open_clip_config(path: Path) -> dict | None:
    """``model_cfg`` of an ``open_clip_config.json`` next to ``path`` (the Hugging Face hub layout), if readable."""
    cfg_file = path.parent / "open_clip_config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_cfg = cfg.get("model_cfg") if isinstance(cfg, dict) else None
    return model_cfg if isinstance(model_cfg, dict) else None


def openai_clip_evidence(path: Path, sd: dict[str, torch.Tensor]) -> str | None:
    """Why ``path`` holds OpenAI CLIP weights (trained with QuickGELU), or None when nothing offline says so.

    Recognised: a TorchScript archive (the format OpenAI released CLIP in; open_clip always
    builds those with QuickGELU), a state dict with OpenAI's TorchScript-only keys, and an
    ``open_clip_config.json`` beside the file that sets ``quick_gelu: true`` (hub copies of
    the OpenAI weights). A plain open_clip state dict of OpenAI weights carries no marker:
    the activation holds no weights, so only the config name can say so.
    """
    if is_torchscript_archive(path):
        return "it is a TorchScript archive, the format OpenAI released CLIP in"
    found = [k for k in OPENAI_JIT_KEYS if k in sd]
    if found:
        return f"its state dict has OpenAI's TorchScript-only keys ({', '.join(found)})"
    sibling = _sibling_open_clip_config(path)
    if sibling is not None and sibling.get("quick_gelu"):
        return f"{path.parent / 'open_clip_config.json'} says quick_gelu: true"
    return None


def _resolve_quick_gelu(open_clip, arch: str, path: Path, sd: dict[str, torch.Tensor]) -> tuple[bool, str | None]:
    """Whether to build ``arch`` with QuickGELU, and the warning to give when we override its config.

    OpenAI weights load strictly into a plain-GELU config (activations hold no weights) and
    then give wrong targets without any error, so recognised OpenAI weights switch the
    activation to QuickGELU (as open_clip does for its ``openai`` tag). A hub config beside
    the file that says the weights use plain GELU refuses a ``-quickgelu`` name.
    """
    config_quick = bool(open_clip.get_model_config(arch).get("quick_gelu"))
    if config_quick:
        sibling = _sibling_open_clip_config(path)
        if sibling is not None and not sibling.get("quick_gelu") and openai_clip_evidence(path, sd) is None:
            plain = arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else "the config without -quickgelu"
            raise ConfigError(f"openclip teacher {path}: {path.parent / 'open_clip_config.json'} says these "
                              f"weights use plain GELU, but '{arch}' builds the model with QuickGELU",
                              hint=f"name {plain} in the teacher spec")
        return True, None
    reason = openai_clip_evidence(path, sd)
    if reason is None:
        return False, None
    name = f"{arch}-quickgelu"
    advice = (f"name {name} in the teacher spec to make this explicit"
              if open_clip.get_model_config(name) is not None else "open_clip has no -quickgelu config of it")
    return True, (f"openclip teacher: {path} holds OpenAI CLIP weights ({reason}), which were trained with "
                  f"QuickGELU, but the open_clip config '{arch}' uses plain GELU and would give wrong targets; "
                  f"built it with QuickGELU instead (open_clip force_quick_gelu=True, as '{name}'); {advice}.")


class OpenCLIPTeacher(Teacher):
    """An OpenCLIP / OpenAI CLIP ViT image tower (CAE v2's and PanDerm's teacher).

    Targets are ``ln_post`` applied to all tokens, times ``proj``: ``[B, 1+196,
    out_dim]``. The input size is chosen so the grid is 14×14 (ViT-B/16 → 224,
    ViT-L/14 → 196, the PanDerm paper's setting) and the positional embedding is
    bilinearly resized when that differs from the native grid.

    OpenAI weights need QuickGELU (``ViT-L-14-quickgelu``): the activation is not
    stored in the weights. When the file is recognisably OpenAI's
    (:func:`openai_clip_evidence`) but ``arch`` uses plain GELU, the tower is built
    with QuickGELU instead and a ``UserWarning`` names both configs; ``quick_gelu``
    and ``notes`` record what was built.

    Args:
        arch: open_clip model name, e.g. ``ViT-L-14-quickgelu``.
        weights_path: Local state dict of the whole CLIP model (``visual.*`` keys)
            or of the image tower alone. OpenAI's TorchScript ``.pt`` only with ``trust_torchscript``.
        grid: Target patch grid (the student's).
        trust_torchscript: Allow a TorchScript archive (``torch.jit.load`` runs its code).

    Raises:
        ConfigError: unknown or hub arch, weights of another architecture, or a
            ``-quickgelu`` name for weights whose hub config says plain GELU.
    """

    has_cls = True

    def __init__(self, arch: str, weights_path: str | Path, grid: int = 14, precision: str = "auto",
                 trust_torchscript: bool = False):
        super().__init__(precision)
        try:
            import open_clip
        except ImportError:
            raise ConfigError("the openclip teacher needs open_clip, which is not installed",
                              hint=_TRAIN_HINT) from None
        if ":" in arch or "/" in arch:
            raise ConfigError(f"openclip teacher arch must be a plain model name, not {arch!r}",
                              hint="hub names are refused: teachers load local files only")
        if open_clip.get_model_config(arch) is None:
            raise ConfigError(f"unknown open_clip architecture {arch!r}",
                              hint="see open_clip.list_models() for the names")
        path = _require_file(weights_path, "openclip teacher")
        sd = _read_weights(path, trust_torchscript)
        self.quick_gelu, note = _resolve_quick_gelu(open_clip, arch, path, sd)
        self.notes = [note] if note else []
        if note:
            warnings.warn(note, UserWarning, stacklevel=2)
        model = open_clip.create_model(arch, pretrained=None, device="cpu", force_quick_gelu=self.quick_gelu)
        visual = model.visual
        del model  # the text tower is never used
        if any(k.startswith("visual.") for k in sd):
            sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
        _load_strict(visual, sd, path, f"open_clip {arch} image tower")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "proj", None) is None:
            raise ConfigError(f"open_clip {arch} has no plain ln_post + proj token path",
                              hint="use a CLIP ViT (ViT-B-16, ViT-L-14, ...)")
        patch = visual.conv1.kernel_size[0]
        self.grid, self.input_size = grid, grid * patch
        self.out_dim = visual.proj.shape[1]
        self.mean = tuple(getattr(visual, "image_mean", None) or OPENAI_CLIP_MEAN)
        self.std = tuple(getattr(visual, "image_std", None) or OPENAI_CLIP_STD)
        with torch.no_grad():
            visual.positional_embedding = nn.Parameter(
                _resize_grid_embedding(visual.positional_embedding.data, grid, prefix=1), requires_grad=False)
        self.visual = visual
        self.arch, self.weights_path = arch, str(path)
        self.freeze()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={'QuickGELU' if self.quick_gelu else 'GELU'}"

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.transformer(v.ln_pre(x))
        return v.ln_post(x) @ v.proj


class TimmTeacher(Teacher):
    """A timm ViT as teacher: ``forward_features`` tokens (CLS kept, other prefix tokens dropped).

    The model is created at its native size, loaded strictly, then re-sized so
    the patch grid is 14×14 (``set_input_size`` resamples the position table).

    Args:
        name: timm model name, e.g. ``vit_base_patch16_224``.
        weights_path: Local state dict (safetensors or a weights-only torch file).
        grid: Target patch grid.
        trust_torchscript: Allow a TorchScript archive (``torch.jit.load`` runs its code).
        **model_kwargs: Extra ``timm.create_model`` arguments (tests use tiny depths).
    """

    def __init__(self, name: str, weights_path: str | Path, grid: int = 14, precision: str = "auto",
                 trust_torchscript: bool = False, **model_kwargs):
        super().__init__(precision)
        import timm

        path = _require_file(weights_path, "timm teacher")
        try:
            model = timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise ConfigError(f"cannot create timm model {name!r}: {exc}",
                              hint="see timm.list_models() for the names") from None
        sd = _read_weights(path, trust_torchscript)
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}  # classifier unused (num_classes=0)
        _load_strict(model, sd, path, f"timm {name}")
        if not hasattr(model, "patch_embed") or not hasattr(model, "num_prefix_tokens"):
            raise ConfigError(f"timm model {name!r} is not a ViT with patch tokens")
        patch = model.patch_embed.patch_size[0]
        if model.patch_embed.grid_size != (grid, grid):
            if not hasattr(model, "set_input_size"):
                raise ConfigError(f"timm model {name!r} has a {model.patch_embed.grid_size} grid and cannot be "
                                  f"re-sized to {grid}×{grid}")
            model.set_input_size(img_size=grid * patch)
        self.grid, self.input_size = grid, grid * patch
        self.has_cls = getattr(model, "cls_token", None) is not None
        self.out_dim = model.num_features
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean, self.std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        self.model, self.name, self.weights_path = model, name, str(path)
        self.freeze()

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.forward_features(images)
        n_prefix = self.model.num_prefix_tokens
        patches = x[:, n_prefix:]
        return torch.cat([x[:, :1], patches], dim=1) if self.has_cls else patches


def build_teacher(spec: str, *, trust_torchscript: bool = False) -> Teacher:
    """Build a teacher from ``name[:rest]`` through the plugin teacher registry.

    ``trust_torchscript`` lets a teacher whose factory accepts it (``openclip``, ``timm``)
    load a TorchScript weights archive, which runs the archive's code.

    Raises:
        ConfigError: unknown teacher (listing the registered ones), a bad spec, or
            ``trust_torchscript`` for a teacher that reads no weights file.
    """
    import inspect

    from panderm.plugins import registries

    name, _, rest = spec.partition(":")
    entry = registries().teachers.get(name.strip())
    if not trust_torchscript:
        return entry.factory(rest)
    if "trust_torchscript" not in inspect.signature(entry.factory).parameters:
        raise ConfigError(f"--trust-torchscript-teacher does not apply to the '{name.strip()}' teacher",
                          hint="it only applies to teachers that read a weights file (openclip, timm)")
    return entry.factory(rest, trust_torchscript=True)


def split_weights_spec(rest: str, kind: str) -> tuple[str, str]:
    """Split ``<model>:<path>`` (the path may itself contain ``:``)."""
    model, sep, path = rest.partition(":")
    if not sep or not model or not path:
        raise ConfigError(f"teacher spec '{kind}:{rest}' needs a model name and a local weights file",
                          hint=f"use {kind}:<model>:<path to weights>")
    return model, path
