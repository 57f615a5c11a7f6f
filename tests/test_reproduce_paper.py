"""The built-in ``reproduce`` entries carry the paper's figures exactly as printed.

The paper text (``../shared/docs/panderm-paper.txt``) is re-read at test time: every
figure of every entry is looked up in the printed row it names in ``source`` and
compared, value and 95% CI, so a transcription typo fails here. In that file an
Extended Data Table's caption line comes *after* its rows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from panderm.reproduce.benchmarks import KINDS, PAPER_METRICS, Benchmark
from panderm.reproduce.paper import paper_benchmarks
from panderm.reproduce.paper_tables import SUBGROUP_SETTINGS

REPO = Path(__file__).resolve().parents[1]
TABLE1_DATASETS = ("PAD", "HAM10000", "DermC", "BCN20000", "DDI", "HIBA", "MSKCC", "PATCH16", "ISIC2024", "WSI")
CURVE_TABLES = {15: "ham10000-curve", 16: "bcn20000-curve", 17: "hiba-curve", 18: "dermc-curve",
                19: "pad-curve", 20: "patch16-curve"}
#: Tables whose rows carry no model column (PanDerm only): the second column is the subgroup.
SUBGROUP_TABLES = {21, 22}
COLUMN_OF = {ours: paper for paper, ours in PAPER_METRICS.items()} | {"n": "n"}
SOURCE = re.compile(r"Extended Data Table (\d+), (.+?) / (.+)")
CELL = re.compile(r"(\d+(?:\.\d+)?)(?: \((\d+\.\d+)-(\d+\.\d+)\))?\**")


def _paper_path() -> Path:
    env = os.environ.get("PANDERM_PAPER")
    if env:
        return Path(env)
    shared = os.environ.get("PANDERM_SHARED_DATA")
    base = Path(shared).parent if shared else REPO.parent / "shared"
    return base / "docs" / "panderm-paper.txt"


@pytest.fixture(scope="module")
def paper_lines() -> list[str]:
    path = _paper_path()
    if not path.is_file():
        pytest.skip(f"paper text not found at {path} (set PANDERM_PAPER)")
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def benchmarks() -> dict[str, Benchmark]:
    return {b.name: b for b in paper_benchmarks()}


def printed_table(lines: list[str], number: int) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """Header and rows of Extended Data Table ``number``: (group, second column) → column → cell."""
    captions = [i for i, line in enumerate(lines) if line.startswith(f"Extended Data Table {number}:")]
    assert len(captions) == 1, f"Extended Data Table {number}: {len(captions)} captions"
    i = captions[0] - 1
    while not lines[i].strip():
        i -= 1
    block = []
    while i >= 0 and "\t" in lines[i]:
        block.append(lines[i])
        i -= 1
    header, *rows = [line.split("\t") for line in reversed(block)]
    assert header[0] in {"Dataset", "Percent", "Category"}, header
    table, group = {}, None
    for cells in rows:
        group = cells[0] or group
        key = (group, cells[1])
        assert key not in table, f"Extended Data Table {number}: row {key} printed twice"
        table[key] = dict(zip(header[2:], cells[2:]))
    return header, table


def parse_cell(cell: str) -> tuple[float, tuple[float, float] | None] | None:
    """``"0.926 (0.912-0.940)***"`` → ``(0.926, (0.912, 0.940))``; ``"—"`` → ``None``."""
    if cell.strip() == "—":
        return None
    m = CELL.fullmatch(cell.strip())
    assert m, f"unreadable printed cell {cell!r}"
    return float(m[1]), ((float(m[2]), float(m[3])) if m[2] else None)


def printed_row(lines, source: str) -> tuple[list[str], dict[str, str], str]:
    """The printed row a result's ``source`` names, the table's header and the row's label."""
    m = SOURCE.fullmatch(source)
    assert m, f"source {source!r} does not read 'Extended Data Table N, MODEL / ROW'"
    number, model, rest = int(m[1]), m[2], m[3]
    header, table = printed_table(lines, number)
    if number in SUBGROUP_TABLES:
        assert model == "PanDerm", source
        group, label = rest.split(" / ")
    else:
        group, label = rest, model
    assert (group, label) in table, f"{source}: no printed row {group!r} / {label!r}"
    return header, table[(group, label)], label


def all_results():
    return [(b, r) for b in paper_benchmarks() for r in b.results]


@pytest.mark.parametrize("bench,result", all_results(), ids=lambda x: getattr(x, "source", getattr(x, "name", "")))
def test_every_figure_is_the_printed_one(paper_lines, bench, result):
    header, row, label = printed_row(paper_lines, result.source)
    printed_columns = set(header[2:])
    for fig in result.figures:
        column = COLUMN_OF[fig.metric]
        if column == "n" and "n" not in row:  # Extended Data Table 21 prints n inside the row label
            n = re.search(r"\(n=(\d+)\)", label)
            assert n and float(n[1]) == fig.value, f"{result.source}: n {fig.value} vs label {label!r}"
            continue
        assert column in row, f"{result.source}: the table prints no {column} column"
        printed = parse_cell(row[column])
        assert printed is not None, f"{result.source}: {column} is printed as missing"
        value, ci = printed
        assert fig.value == value, f"{result.source} {column}: {fig.value} transcribed, {value} printed"
        assert fig.ci == ci, f"{result.source} {column}: CI {fig.ci} transcribed, {ci} printed"
    transcribed = {COLUMN_OF[f.metric] for f in result.figures}
    assert printed_columns <= transcribed, f"{result.source}: columns left out: {printed_columns - transcribed}"


@pytest.mark.parametrize("number", [1, 11, 12, 13, 15, 16, 17, 18, 19, 20, 21, 22])
def test_every_transcribed_row_is_the_printed_one(paper_lines, number):
    """The whole transcriptions (every model, also those not chosen as baseline) match the paper."""
    from panderm.reproduce import paper_tables

    transcribed = getattr(paper_tables, f"TABLE_{number}")
    header, printed = printed_table(paper_lines, number)
    rows = {(group, key): cells for group, keyed in transcribed.items() for key, cells in keyed.items()}
    printed_rows = {k for k, row in printed.items() if any(parse_cell(c) is not None for c in row.values())}
    assert set(rows) == printed_rows, f"Extended Data Table {number}: rows differ: {set(rows) ^ printed_rows}"
    for key, cells in rows.items():
        want = [parse_cell(printed[key][c]) for c in header[2:]]
        got = [parse_cell(c) for c in cells]
        assert got == want, f"Extended Data Table {number} {key}: {cells} transcribed"


def test_table1_has_the_ten_datasets(paper_lines, benchmarks):
    _, table = printed_table(paper_lines, 1)
    printed = list(dict.fromkeys(group for group, _ in table))
    assert printed == list(TABLE1_DATASETS)
    entries = [b for b in benchmarks.values() if b.results[0].source.startswith("Extended Data Table 1,")]
    assert [b.dataset for b in entries] == list(TABLE1_DATASETS)
    assert [b.name for b in entries] == [d.lower() for d in TABLE1_DATASETS]


def test_table1_kinds_and_primary_metrics(benchmarks):
    binary = {"dermc", "ddi", "hiba", "mskcc", "isic2024", "wsi"}
    for name in (d.lower() for d in TABLE1_DATASETS):
        b = benchmarks[name]
        assert b.binary == (name in binary), name
        assert b.primary_metric == ("auroc" if b.binary else "weighted_f1"), name
        assert b.kind == ("listed" if name in {"isic2024", "wsi"} else "probe"), name
        assert ("binary_label" in b.csv_layout.split(",")) == b.binary, name
    # the two only listed: the notes say why and which command approximates them
    assert "panderm finetune" in benchmarks["isic2024"].notes
    assert "panderm slide mil" in benchmarks["wsi"].notes


def test_binary_datasets_are_the_two_class_ones_of_methods(paper_lines, benchmarks):
    methods = {"DermC": "Derm7pt", "DDI": "DDI", "HIBA": "HIBA", "MSKCC": "MSKCC", "ISIC2024": "ISIC2024",
               "WSI": "Melanoma Slide Classification (WSI)", "PAD": "PAD-UFES-20", "HAM10000": "HAM10000",
               "BCN20000": "BCN20000", "PATCH16": "Skin Tumor Patch Classification (PATCH16)"}
    for dataset, heading in methods.items():
        line = next(x for x in paper_lines if x.startswith(heading + " ") and "classes)" in x)
        classes = int(re.search(r"\((\d+) classes\)", line)[1])
        assert benchmarks[dataset.lower()].binary == (classes == 2), (dataset, classes)


def _printed_values(row: dict[str, str], header: list[str]) -> tuple[float, ...] | None:
    cells = [parse_cell(row[c]) for c in header[2:]]
    return None if any(c is None for c in cells) else tuple(c[0] for c in cells)


def test_table1_baseline_is_the_strongest_printed(paper_lines, benchmarks):
    header, table = printed_table(paper_lines, 1)
    for dataset in TABLE1_DATASETS:
        b = benchmarks[dataset.lower()]
        first = header.index(COLUMN_OF[b.primary_metric]) - 2
        ranked = {model: (v[first], *v) for (g, model), row in table.items()
                  if g == dataset and model != "PanDerm" and (v := _printed_values(row, header))}
        assert b.baseline == max(ranked, key=ranked.get), dataset
        assert {r.model for r in b.results} == {"PanDerm", b.baseline}


def test_curves_cover_every_printed_percent_with_the_strongest_baseline(paper_lines, benchmarks):
    for number, name in CURVE_TABLES.items():
        b = benchmarks[name]
        header, table = printed_table(paper_lines, number)
        percents = list(dict.fromkeys(group for group, _ in table))
        assert percents == ["5%", "10%", "20%", "30%", "50%", "100%"], number
        assert b.kind == "curve" and b.percents == (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
        for model in ("PanDerm", b.baseline):
            assert [r.setting for r in b.rows(model)] == percents, (name, model)
        first = header.index(COLUMN_OF[b.primary_metric]) - 2
        means = {}
        for (pct, model), row in table.items():
            if model != "PanDerm" and (v := _printed_values(row, header)):
                means.setdefault(model, []).append(v[first])
        best = max(means, key=lambda m: sum(means[m]) / len(means[m]))
        assert b.baseline == best, name
    assert "SwAVDerm" in benchmarks["patch16-curve"].notes and "missing" in benchmarks["patch16-curve"].notes


def test_every_paper_row_has_the_primary_metric_and_entries_are_well_formed(benchmarks):
    for b in benchmarks.values():
        assert b.kind in KINDS and b.name == b.name.lower() and " " not in b.name
        assert b.modality in {"dermoscopy", "clinical", "tbp", "pathology"}
        assert b.title and b.protocol and b.how_to_get and b.csv_layout.startswith("image,")
        assert b.rows("PanDerm"), b.name
        assert {r.model for r in b.results} <= {"PanDerm", b.baseline}, b.name
        for r in b.rows("PanDerm"):
            assert r.figure(b.primary_metric) is not None, (b.name, r.setting)
        if b.kind == "listed":
            assert b.notes, b.name
        if b.baseline:
            assert [r.setting for r in b.rows(b.baseline)] == [r.setting for r in b.rows("PanDerm")], b.name
        settings = [r.setting for r in b.rows("PanDerm")]
        assert len(settings) == len(set(settings)), b.name


def test_segmentation_entries_are_listed_against_medsam(benchmarks):
    for name in ("isic2018-segmentation", "ham10000-segmentation"):
        b = benchmarks[name]
        assert b.kind == "listed" and b.baseline == "MedSAM" and b.primary_metric == "jaccard"
        assert b.rows("MedSAM")[0].source.startswith("Extended Data Table 13,")
        assert "panderm segment train" in b.notes


def test_subgroup_entries_map_every_setting_to_a_csv_column(benchmarks):
    for name, mapping in SUBGROUP_SETTINGS.items():
        b = benchmarks[name]
        assert b.kind == "subgroups"
        settings = {r.setting for r in b.rows("PanDerm")} - {""}
        assert settings == set(mapping), name
        for column, _ in mapping.values():
            assert column in b.subgroup_columns and column in b.csv_layout.split(","), (name, column)
    ham = benchmarks["ham10000-subgroups"]
    assert ham.paper("").figure("n").value == 1232
    assert ham.subgroup_columns == ("sex", "localization", "age")


def test_docs_name_every_entry():
    text = (REPO / "docs" / "reproduce.md").read_text(encoding="utf-8")
    for heading in ("## Running an experiment", "## Datasets", "## What cannot be reproduced and why"):
        assert heading in text
    for b in paper_benchmarks():
        assert f"`{b.name}`" in text, b.name
