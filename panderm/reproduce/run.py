"""``reproduce``: run one paper experiment on the user's copy of its data and compare with the paper.

The run is two resumable steps, each the library function behind a command, so a
user can repeat any of them by hand (the report lists the exact commands):

1. :func:`panderm.extract.extract_features` of every CSV image into ``out/features``,
   in fp32 (the release extracted in fp32; bf16 features move probe scores by a
   few thousandths). A rerun resumes; a rerun with other weights is refused.
2. :func:`panderm.eval.probe.run_probe` with the release protocol: once (``probe``),
   once per training fraction (``curve``), or once followed by per-subgroup
   metrics on its test predictions (``subgroups``).

Our figures then sit beside the paper's in ``report.md``, ``report.json`` and
``report.png`` (see :mod:`panderm.reproduce.report`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.reproduce.benchmarks import Benchmark
from panderm.reproduce.registry import get_benchmark, runnable_benchmarks

PROTOCOL = "release"
FEATURE_PRECISION = "fp32"


@dataclass
class ReproduceResult:
    """What one ``reproduce`` run measured and wrote."""

    benchmark: Benchmark
    ours: dict[str, dict[str, dict[str, float]]]
    rows: list[dict[str, Any]]
    commands: list[str]
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None
    files: list[Path] = field(default_factory=list)


def find_csv(data: Path, csv: str | Path | None) -> Path:
    """The experiment's CSV: ``csv`` (relative to ``data`` unless absolute) or ``data/labels.csv``."""
    path = Path(csv) if csv is not None else Path("labels.csv")
    if not path.is_absolute() and not path.is_file():
        path = data / path
    if not path.is_file():
        raise InputError(f"no dataset CSV {path}",
                         hint="put the official processed CSV in --data as labels.csv, or pass --csv FILE")
    return path


def find_root(data: Path, root: str | Path | None) -> Path:
    """Where the CSV's image paths start: ``root``, else ``data/images`` if present, else ``data``."""
    if root is not None:
        return Path(root)
    return data / "images" if (data / "images").is_dir() else data


def check_columns(bench: Benchmark, csv: Path) -> None:
    """Refuse a CSV that lacks the columns the experiment reads, naming them."""
    try:
        columns = set(pd.read_csv(csv, nrows=0).columns)
    except Exception as exc:
        raise InputError(f"cannot read {csv} as CSV: {exc}") from None
    needed = ["image", "split", "binary_label" if bench.binary else "label", *bench.subgroup_columns]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputError(f"{csv} lacks column(s) {', '.join(missing)} needed by '{bench.name}'",
                         hint=f"'{bench.name}' expects the layout {bench.csv_layout}")


def reproduce(name: str, data: str | Path, out: str | Path, *, csv: str | Path | None = None,
              root: str | Path | None = None, model: str = "panderm_large_patch16_224",
              weights: str | None = None, batch_size: int = 64, workers: int | None = None,
              device: str | None = None, n_bootstrap: int = 1000, overwrite: bool = False,
              progress: bool = True, random_init: bool = False) -> ReproduceResult:
    """Run benchmark ``name`` on the data in ``data`` and write the comparison report to ``out``.

    Args:
        name: A registered benchmark (``panderm reproduce list``).
        data: Folder holding the CSV (``labels.csv`` or ``csv``) and the images it names.
        out: Output folder: ``features/``, ``probe*/``, ``report.md``, ``report.json``, ``report.png``.
        csv, root: Override the CSV and the images' folder (see :func:`find_csv`, :func:`find_root`).
        model, weights: The encoder, as for ``panderm extract``.
        random_init: Allow a randomly initialised encoder that ships no weights (tests and ablations).
        n_bootstrap: Bootstrap replicates of our 95% CIs (the paper: 1,000).
        overwrite: Replace features of an earlier run with other weights or settings.

    Raises:
        ConfigError: Unknown benchmark, or one the paper only lists (its notes say why).
        InputError: Missing CSV, columns or images (and whatever extraction or the probe raise).
    """
    from panderm.reproduce.report import compare_with_paper, write_report

    bench = get_benchmark(name)
    if bench.kind == "listed":
        raise ConfigError(f"'{bench.name}' is listed with the paper's figures but cannot be run by reproduce",
                          hint=bench.notes or "see docs/reproduce.md")
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise InputError(f"data folder {data} does not exist", hint="see docs/reproduce.md for each dataset")
    csv_path, image_root = find_csv(data, csv), find_root(data, root)
    check_columns(bench, csv_path)
    from panderm.models.factory import require_weights

    require_weights(model, weights, random_init)  # before any image is read
    warnings = _weights_warning(model, weights)
    features = out / "features"
    extracted = _extract(csv_path, image_root, features, model, weights, batch_size, workers, device,
                         overwrite, progress, random_init)
    warnings += extracted
    commands = [_extract_command(csv_path, image_root, features, model, weights)]
    ours, more = _evaluate(bench, features, csv_path, out, n_bootstrap, commands)
    warnings += more
    rows = compare_with_paper(bench, ours)
    result = ReproduceResult(bench, ours, rows, commands, warnings, out)
    result.files = write_report(result, model=model, weights=weights, csv=csv_path, root=image_root)
    return result


def _weights_warning(model: str, weights: str | None) -> list[str]:
    from panderm.models.factory import has_weights

    if has_weights(model, weights):
        return []
    return [f"{model} has no weights and none were given: the encoder is randomly initialised, so 'ours' "
            f"measures the pipeline, not PanDerm"]


def _extract(csv: Path, root: Path, features: Path, model, weights, batch_size, workers, device,
             overwrite: bool, progress: bool, random_init: bool = False) -> list[str]:
    from panderm.extract import extract_features

    result = extract_features(csv, features, model=model, weights=weights, root=root,
                              precision=FEATURE_PRECISION, batch_size=batch_size, workers=workers,
                              device=device, resume=True, overwrite=overwrite, progress=progress,
                              random_init=random_init)
    if not result.n_skipped:
        return []
    return [f"{result.n_skipped} image(s) could not be read and are left out (features/skipped.csv)"]


def _evaluate(bench: Benchmark, features: Path, csv: Path, out: Path, n_bootstrap: int,
              commands: list[str]) -> tuple[dict[str, dict[str, dict[str, float]]], list[str]]:
    """Our metrics per setting (``""``, ``"10%"``, ``"Location=Face"``) and the probe's warnings."""
    if bench.kind == "curve":
        ours, warnings = {}, []
        for p in bench.percents:
            result = _probe(bench, features, csv, out / f"probe_{percent_label(p)[:-1]}pct", n_bootstrap,
                            commands, percent=p)
            ours[percent_label(p)] = result.metrics
            warnings += result.warnings
        return ours, _unique(warnings)
    result = _probe(bench, features, csv, out / "probe", n_bootstrap, commands)
    if bench.kind == "probe":
        return {"": result.metrics}, list(result.warnings)
    from panderm.reproduce.subgroups import overall_figures, subgroup_settings

    overall = overall_figures(result.metrics, len(result.predictions))
    per_group = subgroup_settings(bench, result.predictions, csv, result.classes, n_bootstrap)
    return {"": overall, **per_group}, list(result.warnings)


def _probe(bench: Benchmark, features: Path, csv: Path, out: Path, n_bootstrap: int, commands: list[str],
           percent: float = 1.0):
    from panderm.eval.probe import run_probe

    result = run_probe(features, csv, out, binary=bench.binary, percent_data=percent, protocol=PROTOCOL,
                       n_bootstrap=n_bootstrap)
    commands.append(_probe_command(bench, features, csv, out, n_bootstrap, percent))
    return result


def percent_label(p: float) -> str:
    """``0.05`` → ``"5%"`` (how the paper's tables name a training fraction)."""
    return f"{round(p * 100, 4):g}%"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _extract_command(csv: Path, root: Path, features: Path, model: str, weights: str | None) -> str:
    parts = ["panderm", "extract", str(csv), "--root", str(root), "--model", model]
    if weights:
        parts += ["--weights", str(weights)]
    return shlex.join(parts + ["--precision", FEATURE_PRECISION, "--out", str(features)])


def _probe_command(bench: Benchmark, features: Path, csv: Path, out: Path, n_bootstrap: int,
                   percent: float) -> str:
    parts = ["panderm", "probe", "--features", str(features), "--csv", str(csv), "--protocol", PROTOCOL]
    if bench.binary:
        parts.append("--binary")
    if percent != 1.0:
        parts += ["--percent-data", f"{percent:g}"]
    if n_bootstrap != 1000:
        parts += ["--bootstrap", str(n_bootstrap)]
    return shlex.join(parts + ["--out", str(out)])


def find_dataset(data_root: Path, bench: Benchmark) -> Path | None:
    """The folder of ``bench`` under ``data_root``: its name, or its dataset name (any case)."""
    wanted = {bench.name.lower(), bench.dataset.lower(), bench.name.split("-")[0].lower()}
    if not data_root.is_dir():
        raise InputError(f"data root {data_root} does not exist")
    for child in sorted(data_root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted and (child / "labels.csv").is_file():
            return child
    return None


def reproduce_all(data_root: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Run every runnable benchmark whose folder (with ``labels.csv``) is under ``data_root``.

    Each runs into ``out/NAME``; a failing one is reported and the others go on.
    Returns the summary also written to ``out/summary.md`` and ``out/summary.json``.
    """
    from panderm.reproduce.report import write_summary

    from panderm.models.factory import require_weights

    require_weights(options.get("model", "panderm_large_patch16_224"), options.get("weights"),
                    bool(options.get("random_init")))  # once, not once per benchmark
    data_root, out = Path(data_root), Path(out)
    done, absent, failed = [], [], {}
    for bench in runnable_benchmarks():
        folder = find_dataset(data_root, bench)
        if folder is None:
            absent.append(bench.name)
            continue
        try:
            done.append(reproduce(bench.name, folder, out / bench.name, **options))
        except (InputError, ConfigError) as exc:
            failed[bench.name] = str(exc)
    return write_summary(out, done, absent, failed)
