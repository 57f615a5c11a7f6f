"""Per-lesion sequence evaluation (``panderm sequence eval``) on small hand-checkable CSVs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from panderm.errors import InputError
from panderm.longitudinal.sequence import evaluate_sequences

# Threshold 0.5. Rows deliberately out of time order.
#   M1 melanoma, 3 time points: 0.2, 0.7, 0.9  -> first detection at index 2
#   M2 melanoma, 2 time points: 0.6, 0.4       -> detected at index 1
#   M3 melanoma, 4 time points: all < 0.5      -> never detected
#   B1 benign,   2 time points: 0.1, 0.2       -> no false alarm
#   B2 benign,   3 time points: 0.3, 0.5, 0.1  -> false alarm at index 2 (0.5 >= threshold)
CSV = """lesion_id,timepoint,prob_malignant,label
M1,3,0.9,1
M1,1,0.2,1
M1,2,0.7,1
M2,1,0.6,1
M2,2,0.4,1
M3,1,0.1,1
M3,2,0.2,1
M3,3,0.3,1
M3,10,0.45,1
B1,1,0.1,0
B1,2,0.2,0
B2,2021-01-05,0.3,0
B2,2021-06-01,0.5,0
B2,2022-01-10,0.1,0
"""


@pytest.fixture
def preds(tmp_path):
    path = tmp_path / "preds.csv"
    path.write_text(CSV)
    return path


def test_per_lesion_and_summary(preds, tmp_path):
    out = tmp_path / "seq"
    res = evaluate_sequences(preds, out)
    rows = res.per_lesion.set_index("lesion_id")
    assert rows.loc["M1", "first_detection_index"] == 2
    assert rows.loc["M1", "first_detection_timepoint"] == "2"
    assert rows.loc["M2", "first_detection_index"] == 1
    assert not rows.loc["M3", "detected"] and pd.isna(rows.loc["M3", "first_detection_index"])
    assert rows.loc["M3", "n_timepoints"] == 4 and rows.loc["M3", "last_timepoint"] == "10"  # numeric order
    assert not rows.loc["B1", "false_alarm"]
    assert rows.loc["B2", "false_alarm"] and rows.loc["B2", "first_false_alarm_index"] == 2
    assert rows.loc["B2", "first_false_alarm_timepoint"] == "2021-06-01"

    s = res.summary
    assert (s["n_lesions"], s["n_melanomas"], s["n_benign"], s["n_images"]) == (5, 3, 2, 14)
    assert s["detected_at_first_timepoint"] == pytest.approx(1 / 3)
    assert s["sensitivity"] == pytest.approx(2 / 3)
    assert s["mean_first_detection_index"] == pytest.approx(1.5)
    assert s["median_first_detection_index"] == pytest.approx(1.5)
    assert s["specificity"] == pytest.approx(0.5)
    # correct images: M1 2, M2 1, M3 0, B1 2, B2 2 -> 7 / 14
    assert s["accuracy_per_image"] == pytest.approx(0.5)

    assert json.loads((out / "summary.json").read_text())["sensitivity"] == pytest.approx(2 / 3)
    table = pd.read_csv(out / "per_lesion.csv")
    assert list(table["lesion_id"]) == ["B1", "B2", "M1", "M2", "M3"]
    png = out / "sequence_plot.png"
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))


def test_threshold_changes_calls(preds):
    s = evaluate_sequences(preds, threshold=0.05).summary
    assert s["sensitivity"] == 1.0 and s["detected_at_first_timepoint"] == 1.0
    assert s["specificity"] == 0.0
    s = evaluate_sequences(preds, threshold=0.95).summary
    assert s["sensitivity"] == 0.0 and s["mean_first_detection_index"] is None and s["specificity"] == 1.0


def test_only_benign_lesions(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("lesion_id,timepoint,prob_malignant,label\nB1,1,0.1,0\nB1,2,0.9,0\n")
    res = evaluate_sequences(path, tmp_path / "out")
    assert res.summary["sensitivity"] is None and res.summary["specificity"] == 0.0
    assert (tmp_path / "out" / "sequence_plot.png").exists()


def test_cli_eval(preds, tmp_path, cli):
    out = tmp_path / "seq"
    r = cli(["sequence", "eval", "--predictions", str(preds), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "2/3" in r.output and "1/3" in r.output
    assert {p.name for p in out.iterdir()} == {"per_lesion.csv", "summary.json", "sequence_plot.png"}
    r = cli(["sequence", "eval", "--predictions", str(preds), "--out", str(tmp_path / "seq2"), "--json", "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # --json: summary.json plus the output paths, nothing else on stdout
    assert doc == {**json.loads((out / "summary.json").read_text()), "out": str(tmp_path / "seq2"),
                   "files": [str(tmp_path / "seq2" / n) for n in ("per_lesion.csv", "summary.json",
                                                                  "sequence_plot.png")]}


BAD = {
    "missing": ("lesion_id,timepoint,label\nM1,1,1\n", "prob_malignant"),
    "nonnumeric": ("lesion_id,timepoint,prob_malignant,label\nM1,1,high,1\n", "non-numeric"),
    "range": ("lesion_id,timepoint,prob_malignant,label\nM1,1,1.5,1\n", "outside [0, 1]"),
    "varying": ("lesion_id,timepoint,prob_malignant,label\nM1,1,0.2,1\nM1,2,0.3,0\n", "varies within lesion"),
    "badlabel": ("lesion_id,timepoint,prob_malignant,label\nM1,1,0.2,melanoma\n", "not 0 or 1"),
    "duplicate": ("lesion_id,timepoint,prob_malignant,label\nM1,1,0.2,1\nM1,1,0.3,1\n", "twice"),
    "badtime": ("lesion_id,timepoint,prob_malignant,label\nM1,visit one,0.2,1\n", "ISO date"),
    "header_only": ("lesion_id,timepoint,prob_malignant,label\n", "no rows"),
    "empty": ("", "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, tmp_path):
    text, message = BAD[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)) as exc:
        evaluate_sequences(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("case", ["empty", "varying", "nonnumeric"])
def test_cli_bad_input_exit_2(case, tmp_path, cli):
    text, message = BAD[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    r = cli(["sequence", "eval", "--predictions", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "Traceback" not in r.output and message in r.output and str(path) in r.output


def test_cli_missing_file(tmp_path, cli):
    r = cli(["sequence", "eval", "--predictions", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("group", ["change", "classifier", "segment", "sequence", "slide", "tbp"])
def test_group_help_pages_show_examples_that_parse(cli, group):
    """Each group's --help ends with examples; every example names real options (pasted with --help)."""
    import shlex

    res = cli([group, "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output
    lines = [line.strip() for line in res.output.split("Examples:", 1)[1].splitlines()
             if line.strip().startswith("panderm ")]
    assert 2 <= len(lines) <= 4, lines
    for line in lines:
        args = shlex.split(line, comments=True)[1:]
        ran = cli([*args, "--help"])  # unknown options and commands still fail before --help is honoured
        assert ran.exit_code == 0, (line, ran.output)
