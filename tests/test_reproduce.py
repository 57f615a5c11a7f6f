"""``panderm reproduce``: the paper's experiments run end to end on real images with the demo encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import panderm
from panderm.plugins import plugin_context, registries
from panderm.reproduce.benchmarks import Benchmark, Figure, PaperResult

DEMO = "panderm_tiny_patch16_224.demo"
TABLE1 = ("pad", "ham10000", "dermc", "bcn20000", "ddi", "hiba", "mskcc", "patch16", "isic2024", "wsi")


@pytest.fixture(scope="module")
def ham_subset(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    """A small HAM10000 dataset folder: labels.csv (train/test rows of every class) and its images."""
    src = shared_data / "ham10000_dermoscopy_cls"
    table = pd.read_csv(src / "labels.csv")
    parts = [table[(table.label == c) & (table.split == s)].head(n)
             for c in sorted(table.label.unique()) for s, n in (("train", 14), ("test", 8))]
    folder = tmp_path_factory.mktemp("ham_subset")
    pd.concat(parts).to_csv(folder / "labels.csv", index=False)
    os.symlink(src / "images", folder / "images")
    return folder, src / "images"


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_list_shows_every_table1_dataset_with_the_papers_figures(cli):
    res = cli(["reproduce", "list"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines()[1:] if line.strip()}
    assert set(TABLE1) <= set(lines)
    ham = registries().benchmarks.get("ham10000")
    figure = ham.paper().figure(ham.primary_metric)
    assert f"{figure.value:.3f}" in lines["ham10000"] and "Extended Data Table 1" in lines["ham10000"]
    listed = json.loads(cli(["reproduce", "list", "--json"]).output)
    assert {b["name"] for b in listed} >= set(TABLE1)
    assert all(b["results"] for b in listed)
    for name in ("list", "ham10000", "ham10000-curve", "wsi"):  # every subcommand: its own Examples epilog
        shown = cli(["reproduce", name, "--help"]).output
        assert "Examples:" in shown and f"panderm reproduce {name}" in shown or name == "wsi", name
    assert "select(.name == \"wsi\")" in cli(["reproduce", "wsi", "--help"]).output  # listed only: not runnable
    assert "--data DIR --weights panderm-large --out rep/ham10000" in cli(["reproduce", "ham10000", "--help"]).output


def test_group_options_before_an_experiment_name_are_refused_not_dropped(cli, tmp_path):
    res = cli(["reproduce", "--json", "list"])  # used to print the table
    assert res.exit_code == 2 and "--json" in res.output and "after the experiment name" in res.output
    assert "panderm reproduce list --json" in res.output
    res = cli(["reproduce", "--out", str(tmp_path / "x"), "--weights", "W", "ham10000", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "Missing option" not in res.output
    assert "--out, --weights" in res.output and "panderm reproduce ham10000 --out" in res.output
    res = cli(["reproduce", "--out", str(tmp_path / "x"), "--weights", "foo"])  # used to print help, exit 0
    assert res.exit_code == 2 and "--all" in res.output and "experiment name" in res.output
    assert not (tmp_path / "x").exists()
    res = cli(["reproduce"])  # bare: the help
    assert res.exit_code == 0 and "Experiments" in res.output


def test_ham10000_report_equals_a_separate_release_probe(cli, ham_subset, tmp_path, monkeypatch):
    data, _ = ham_subset
    monkeypatch.chdir(tmp_path)
    res = cli(["reproduce", "ham10000", "--data", str(data), "--model", DEMO, "--out", "rep", "--bootstrap", "50",
               "-q"])
    assert res.exit_code == 0, res.output
    report = _report(tmp_path / "rep")
    assert json.loads((tmp_path / "rep/features/meta.json").read_text())["precision"] == "fp32"

    probe = cli(["probe", "--features", "rep/features", "--csv", str(data / "labels.csv"), "--protocol", "release",
                 "--bootstrap", "50", "--out", "separate"])
    assert probe.exit_code == 0, probe.output
    metrics = json.loads((tmp_path / "separate/metrics.json").read_text())
    rows = {r["metric"]: r for r in report["rows"]}
    assert {"weighted_f1", "auroc", "bacc", "aupr"} <= set(rows)
    for name, row in rows.items():
        assert row["ours"] == pytest.approx(metrics[name]["value"], abs=1e-12)
        assert row["ours_ci"] == pytest.approx([metrics[name]["ci_low"], metrics[name]["ci_high"]], abs=1e-12)
        assert row["difference"] == pytest.approx(row["ours"] - row["paper"])
        assert row["paper_in_our_ci"] == (row["ours_ci"][0] <= row["paper"] <= row["ours_ci"][1])
    paper = registries().benchmarks.get("ham10000").paper().figure("weighted_f1")
    assert rows["weighted_f1"]["paper"] == paper.value and rows["weighted_f1"]["paper_ci"] == list(paper.ci)
    md = (tmp_path / "rep/report.md").read_text()
    assert f"{paper.value:.3f}" in md and "panderm probe" in md and "--protocol release" in md
    assert (tmp_path / "rep/report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("panderm extract" in c and "--precision fp32" in c for c in report["commands"])


def test_rerun_resumes_and_other_weights_are_refused(cli, ham_subset, tmp_path):
    data, _ = ham_subset
    args = ["reproduce", "ham10000", "--data", str(data), "--out", str(tmp_path / "rep"), "--bootstrap", "0", "-q"]
    assert cli([*args, "--model", DEMO]).exit_code == 0
    first = _report(tmp_path / "rep")["rows"]
    again = cli([*args, "--model", DEMO, "--json"])
    assert again.exit_code == 0, again.output
    assert [r["ours"] for r in _report(tmp_path / "rep")["rows"]] == [r["ours"] for r in first]
    shown = json.loads(again.stdout)  # --json: report.json plus out and files, nothing else on stdout
    assert [r["ours"] for r in shown["rows"]] == [r["ours"] for r in first]
    assert shown["out"] == str(tmp_path / "rep") and str(tmp_path / "rep" / "report.json") in shown["files"]
    other = cli([*args, "--model", "panderm_tiny_patch16_224"])
    assert other.exit_code != 0
    assert "Traceback" not in other.output and "weights" in other.output.lower()


def test_listed_entries_and_bad_data_are_clean_errors(cli, ham_subset, tmp_path):
    data, _ = ham_subset
    listed = next(b for b in registries().benchmarks.entries() if b.kind == "listed")
    res = cli(["reproduce", listed.name, "--data", str(data), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "cannot be run" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.read_csv(data / "labels.csv").drop(columns=["label"]).to_csv(bad / "labels.csv", index=False)
    res = cli(["reproduce", "ham10000", "--data", str(bad), "--out", str(tmp_path / "y")])
    assert res.exit_code != 0 and "label" in res.output and "labels.csv" in res.output


class ToyBenchmarks:
    """A third-party plugin adding one experiment."""

    @panderm.hookimpl
    def register_benchmarks(self, register):
        register(Benchmark(
            name="toy-ham", title="Toy HAM10000 melanoma detection", dataset="ToyHAM", modality="dermoscopy",
            kind="probe", binary=True, primary_metric="auroc", csv_layout="image,binary_label,split",
            protocol="linear probe, release protocol",
            results=(PaperResult("PanDerm", (Figure("auroc", 0.9, (0.85, 0.95)),), "Toy Table 1, PanDerm"),
                     PaperResult("Rival", (Figure("auroc", 0.8),), "Toy Table 1, Rival")),
            baseline="Rival"))


def test_plugin_benchmark_lists_and_runs_under_all(cli, ham_subset, tmp_path):
    data, images = ham_subset
    root = tmp_path / "datasets"
    (root / "toy-ham").mkdir(parents=True)
    (root / "toy-ham" / "labels.csv").write_bytes((data / "labels.csv").read_bytes())
    os.symlink(images, root / "toy-ham" / "images")
    with plugin_context(ToyBenchmarks(), "toy"):
        assert registries().benchmarks.get("toy-ham").plugin == "toy"
        assert "toy-ham" in cli(["reproduce", "list"]).output
        res = cli(["reproduce", "--all", "--data-root", str(root), "--model", DEMO, "--out", str(tmp_path / "all"),
                   "--bootstrap", "20", "-q"])
        assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "all/summary.json").read_text())
    assert [r["benchmark"] for r in summary["runs"]] == ["toy-ham"]
    assert "ham10000" in summary["absent"]
    row = summary["runs"][0]
    assert row["paper"] == 0.9 and row["metric"] == "auroc" and 0 <= row["ours"] <= 1
    assert "toy-ham" in (tmp_path / "all/summary.md").read_text()
    assert _report(tmp_path / "all/toy-ham")["rows"][0]["baseline"] == 0.8


def _with_features(src_run: Path, out: Path) -> Path:
    """A new run folder holding the features of an earlier run (extraction is then reused)."""
    import shutil

    shutil.copytree(src_run / "features", out / "features")
    return out


@pytest.fixture(scope="module")
def demo_run(ham_subset, tmp_path_factory) -> Path:
    from click.testing import CliRunner

    from panderm_cli.app import build_cli

    data, _ = ham_subset
    out = tmp_path_factory.mktemp("demo_run") / "rep"
    res = CliRunner().invoke(build_cli(), ["reproduce", "ham10000", "--data", str(data), "--model", DEMO,
                                           "--out", str(out), "--bootstrap", "0", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def test_subgroup_entry_reports_weighted_recall_per_paper_setting(cli, ham_subset, demo_run, tmp_path):
    from sklearn.metrics import f1_score, recall_score

    data, _ = ham_subset
    out = _with_features(demo_run, tmp_path / "sub")
    res = cli(["reproduce", "ham10000-subgroups", "--data", str(data), "--model", DEMO, "--out", str(out),
               "--bootstrap", "0", "-q"])
    assert res.exit_code == 0, res.output
    rows = {(r["setting"], r["metric"]): r for r in _report(out)["rows"]}
    preds = pd.read_csv(out / "probe/predictions.csv").merge(pd.read_csv(data / "labels.csv"), on="image")
    female = preds[preds["sex"] == "female"]
    y, p = female["true_label"].astype(str), female["predicted_label"].astype(str)
    assert rows[("Sex=Female", "weighted_recall")]["ours"] == pytest.approx(recall_score(y, p, average="weighted"))
    assert rows[("Sex=Female", "weighted_f1")]["ours"] == pytest.approx(f1_score(y, p, average="weighted"))
    assert rows[("Sex=Female", "n")]["ours"] == len(female) and rows[("Sex=Female", "n")]["paper"] == 563
    assert rows[("Location=Face", "weighted_recall")]["paper"] == 0.871  # 61/70, the paper's "Sensitivity"
    assert rows[("Age=Old", "weighted_f1")]["ours"] is None  # the paper never defines its age groups
    overall = rows[("", "weighted_recall")]
    assert overall["ours"] == pytest.approx((preds["true_label"] == preds["predicted_label"]).mean())


def test_curve_entry_runs_the_release_probe_per_fraction(cli, ham_subset, demo_run, tmp_path):
    data, _ = ham_subset
    out = _with_features(demo_run, tmp_path / "curve")
    res = cli(["reproduce", "ham10000-curve", "--data", str(data), "--model", DEMO, "--out", str(out),
               "--bootstrap", "0", "-q"])
    assert res.exit_code == 0, res.output
    report = _report(out)
    assert sorted({r["setting"] for r in report["rows"]}) == sorted(["5%", "10%", "20%", "30%", "50%", "100%"])
    single = cli(["probe", "--features", str(out / "features"), "--csv", str(data / "labels.csv"),
                  "--percent-data", "0.2", "--bootstrap", "0", "--out", str(tmp_path / "p20")])
    assert single.exit_code == 0, single.output
    metrics = json.loads((tmp_path / "p20/metrics.json").read_text())
    twenty = {r["metric"]: r["ours"] for r in report["rows"] if r["setting"] == "20%"}
    assert twenty["weighted_f1"] == pytest.approx(metrics["weighted_f1"]["value"], abs=1e-12)
    assert any("--percent-data 0.2" in c for c in report["commands"])
