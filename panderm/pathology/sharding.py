"""Slides across ``torchrun`` ranks and nodes (``slide tile``, ``slide extract``).

Same launch model as ``panderm extract`` (:mod:`panderm.distributed`: ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``; one process and no process group without them).
Assignment: the slides are sorted by name (ties by input position) and slide ``i``
of that order goes to rank ``i % world_size``, so every slide has exactly one owner
and a rerun with the same world size gives the same split. Every slide's outputs
are written atomically by its owner; a rerun (any world size) skips finished
slides by looking at the files.

Summary table (``tiling.csv``, ``features.csv``): each rank keeps its own part,
``out/.parts/<table>.<run>.rank<r>-of-<w>.json`` (``run``: a random id that rank 0
broadcasts at the start), rewritten after every slide. All ranks write their first
part and meet at one barrier *before* any work. At the end every rank marks its part
done and waits, by polling the (shared) output folder rather than at a collective, until
every part is done, so ranks that finish hours apart never hit a process-group
timeout and no rank returns before all slides are written (``slide tile`` then
``slide extract`` in one process is safe). Rank 0 then writes the table once,
atomically, and removes the parts (a part gone after the start barrier means done).
Under ``torchrun`` a failed rank stops the whole job, so the wait cannot hang on a dead
rank. Several nodes need ``--out`` (and the slides) on a file system all of them see.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panderm.io import atomic_write_json
from panderm.paths import check_safe_name, inside_out

PARTS_DIR = ".parts"
RUN_ID_LEN = 12


def join_ranks(device: str | None):
    """This process's :class:`~panderm.distributed.DistContext` (joins the torchrun job if any).

    The process group is kept for the life of the process (``init_distributed`` destroys
    it at exit): tiling then extracting in one process reuses it, where destroying and
    re-creating a group on the same torchrun store can hang.
    """
    from panderm.distributed import init_distributed

    return init_distributed(device)


def rank_share(keys: Sequence[str], rank: int, world_size: int) -> list[int]:
    """Input positions this rank owns: position ``order[i]`` with ``i % world_size == rank``, in that order.

    ``order`` sorts ``keys`` (slide names), ties by position: deterministic whatever the input order.
    """
    order = sorted(range(len(keys)), key=lambda i: (str(keys[i]), i))
    return order[rank::max(1, world_size)]


@dataclass(frozen=True)
class Parts:
    """One sharded run's summary-table parts."""

    out: Path
    table: str
    run: str
    rank: int
    world_size: int

    def path(self, rank: int) -> Path:
        """``out/.parts/<table>.<run>.rank<r>-of-<w>.json``."""
        name = f"{self.table[:80]}.{self.run}.rank{rank:05d}-of-{self.world_size:05d}.json"
        return inside_out(self.out, PARTS_DIR, check_safe_name(name, what="part name"))

    def write(self, rows: list[tuple[int, dict]], *, done: bool, extra: dict | None = None) -> None:
        """This rank's rows (``(input position, row)``) so far, atomically."""
        atomic_write_json(self.path(self.rank), {"rank": self.rank, "world_size": self.world_size, "done": done,
                                                 "rows": [[i, r] for i, r in rows], "extra": extra or {}})


def start_parts(out: Path, table: str, ctx) -> Parts | None:
    """Under torchrun: a run id from rank 0, every rank's empty unfinished part, one barrier. Else ``None``."""
    from panderm.distributed import barrier, broadcast_object

    if ctx.world_size == 1:
        return None
    run = broadcast_object(uuid.uuid4().hex[:RUN_ID_LEN] if ctx.rank == 0 else None, ctx)
    parts = Parts(Path(out), table, str(run), ctx.rank, ctx.world_size)
    parts.write([], done=False)
    barrier(ctx)
    return parts


def _read_part(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("rows"), list) else None


def wait_parts(parts: Parts, *, poll: float = 0.5, progress: bool = True) -> list[dict] | None:
    """Block until every rank's part is done (or already removed by rank 0); rank 0 gets the parts."""
    waited, noted = 0.0, 0.0
    while True:
        found = [(r, _read_part(parts.path(r)), parts.path(r).exists()) for r in range(parts.world_size)]
        left = [r for r, data, exists in found if exists and not (data and data.get("done"))]
        if not left:
            return [data for _, data, _ in found] if parts.rank == 0 else None
        time.sleep(poll)
        waited += poll
        if progress and waited - noted >= 60:
            noted = waited
            print(f"panderm: rank {parts.rank} waiting for rank(s) {left} to finish their slides",
                  file=sys.stderr, flush=True)


def _remove(parts: Parts) -> None:
    """Rank 0, after merging: this run's parts and any left by interrupted runs of the same table."""
    for p in inside_out(parts.out, PARTS_DIR).glob(f"{parts.table[:80]}.{'[0-9a-f]' * RUN_ID_LEN}.rank*.json"):
        p.unlink(missing_ok=True)
    try:
        inside_out(parts.out, PARTS_DIR).rmdir()
    except OSError:  # other tables' parts still there
        pass


def merge_table(parts: Parts | None, rows: list[tuple[int, Any]], to_dict, from_dict, *,
                extra: dict | None = None, progress: bool = True) -> tuple[list[Any] | None, list[dict]]:
    """End of a sharded run: on rank 0 every rank's rows (input order) and extras; ``(None, [])`` elsewhere.

    Every rank returns only once all ranks have finished. Single process (``parts`` None):
    ``rows`` itself. ``to_dict``/``from_dict`` map a row object to JSON and back.
    """
    if parts is None:
        return [r for _, r in sorted(rows, key=lambda t: t[0])], [extra or {}]
    parts.write([(i, to_dict(r)) for i, r in rows], done=True, extra=extra)
    found = wait_parts(parts, progress=progress)
    if found is None:
        return None, []
    _remove(parts)
    merged = sorted(((int(i), r) for p in found for i, r in p["rows"]), key=lambda t: t[0])
    return [from_dict(r) for _, r in merged], [p.get("extra", {}) for p in found]


__all__ = ["PARTS_DIR", "Parts", "join_ranks", "merge_table", "rank_share", "start_parts", "wait_parts"]
