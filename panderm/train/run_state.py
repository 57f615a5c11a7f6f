"""Checkpoint files: atomic writes, rotation, RNG capture, the resumable training state.

Layout of a run folder ``out/``:

* ``checkpoint-{step:07d}.pth`` — the exported weights (flat ``{name: tensor}``),
  the last ``keep_last`` periodic ones are kept;
* ``checkpoint-last.pth`` — same content as the newest one;
* ``train-state.pt`` — everything needed to resume exactly (model, optimizer,
  schedule, scaler, every rank's RNG states, data position, configs).

Every file is written to a temporary name and ``os.replace``-d into place, and
every file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panderm.errors import CheckpointError, PandermError
from panderm.io import atomic_path

TRAIN_STATE = "train-state.pt"
LAST = "checkpoint-last.pth"
BEST = "checkpoint-best.pth"  # written by the Trainer when it monitors an evaluation metric
_PERIODIC = re.compile(r"^checkpoint-(\d{7,})\.pth$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}.pth"


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically; any failure leaves the previous file and raises PandermError."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PandermError(f"could not write checkpoint {path}: {reason} (errno {exc.errno})",
                           hint="free disk space or fix permissions, then rerun with --resume; "
                                "the previous checkpoint files are intact") from exc
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a CheckpointError on failure."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state not found: {path}") from None
    except Exception as exc:
        raise CheckpointError(f"cannot load training state {path}: {type(exc).__name__}: {exc}".splitlines()[0],
                              hint="the file is damaged; restore it or start a new run") from None


def periodic_checkpoints(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the periodic checkpoints in ``out``, oldest first."""
    found = []
    for p in Path(out).glob("checkpoint-*.pth"):
        m = _PERIODIC.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def write_weights(out: str | os.PathLike, step: int, tensors: dict[str, torch.Tensor], keep_last: int) -> Path:
    """Write ``checkpoint-{step}.pth`` and ``checkpoint-last.pth``, then drop all but the newest ``keep_last``."""
    out = Path(out)
    path = save_atomic(tensors, out / checkpoint_name(step))
    last = out / LAST
    try:
        with atomic_path(last) as tmp:
            tmp.unlink()
            try:
                os.link(path, tmp)  # same bytes, no second write
            except OSError:
                shutil.copyfile(path, tmp)
    except OSError as exc:
        raise PandermError(f"could not write checkpoint {last}: {exc.strerror or exc} (errno {exc.errno})",
                           hint="free disk space or fix permissions, then rerun with --resume") from exc
    for _, old in periodic_checkpoints(out)[:-max(keep_last, 1)]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def tensor_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the tensors in a state dict (non-tensors dropped)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items() if isinstance(v, torch.Tensor)}


# ----------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """This process's RNG states as plain ints/lists/tensors (``weights_only`` safe)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [int(version), [int(x) for x in mt], gauss],
        "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
