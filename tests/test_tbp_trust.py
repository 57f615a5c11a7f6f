"""Trust tests for TBP bundles and inputs (issue 12): no file runs code, nothing is mixed or lost, paths work.

Payloads are the real ones: a skops file whose schema calls ``numpy.testing._private.utils.runstring``
and a pickle whose ``__reduce__`` calls ``os.system``. Each test asserts that the marker file the
payload would write does not exist.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import skops_runstring_payload

from panderm.errors import CheckpointError, InputError


# --------------------------------------------------------------------------- helpers


def copy_demo_bundle(dest: Path) -> Path:
    from panderm.tbp.bundle import demo_bundle_path

    shutil.copytree(demo_bundle_path(), dest)
    return dest


def edit_meta(bundle: Path, edit) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    edit(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def rehash(bundle: Path, name: str) -> None:
    """Record ``name``'s current sha256, as an attacker who also edits bundle.json would."""
    from panderm.io import sha256_file

    edit_meta(bundle, lambda m: m["files"].__setitem__(name, sha256_file(bundle / name)))


class _Touch:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickle_payload(marker: Path) -> bytes:
    """A pickle whose ``__reduce__`` runs ``touch marker`` when unpickled."""
    return pickle.dumps(_Touch(marker))


def fitted_forest(n_features: int = 5, seed: int = 0, n_trees: int = 12):
    from sklearn.ensemble import ExtraTreesClassifier

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, n_features))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0.3).astype(int)
    et = ExtraTreesClassifier(n_estimators=n_trees, min_samples_leaf=2, class_weight="balanced_subsample",
                              random_state=seed, n_jobs=1).fit(X, y)
    return et, rng.normal(size=(500, n_features))


def ham_tiles(shared_data: Path, n: int, offset: int = 0) -> list[Path]:
    src = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv").drop_duplicates("lesion_id").sort_values("image")
    return [src / "images" / name for name in labels["image"].tolist()[offset:offset + n]]


def assert_clean_error(res, *texts: str) -> None:
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output and "Internal error" not in res.output, res.output
    for text in texts:
        assert text in res.output, res.output


# --------------------------------------------------------------------------- 1. trees as arrays


def test_forest_round_trip_is_bit_identical(tmp_path):
    from panderm.tbp.forest import load_forest, save_forest

    et, X = fitted_forest()
    record = save_forest(et, tmp_path / "f.safetensors")
    rebuilt = load_forest(tmp_path / "f.safetensors", json.loads(json.dumps(record)))
    assert type(rebuilt).__name__ == "ExtraTreesClassifier" and len(rebuilt.estimators_) == 12
    assert np.array_equal(rebuilt.predict_proba(X), et.predict_proba(X))
    assert np.array_equal(rebuilt.feature_importances_, et.feature_importances_)
    assert record["params"]["class_weight"] == "balanced_subsample" and record["n_features"] == 5


def test_bundle_round_trip_is_bit_identical(tmp_path):
    from panderm.tbp.bundle import ML_FILE, load_bundle, save_bundle

    demo = load_bundle()
    et, X = fitted_forest(n_features=3)
    meta = dict(demo.meta, ml={"columns": ["A", "B", "L"], "fill_values": {"A": 0.0, "B": 0.0, "L": 50.0},
                               "measurement_source": "vectra", "n_estimators": 12})
    save_bundle(tmp_path / "b", meta=meta, risk_weight=demo.risk_weight, risk_bias=demo.risk_bias, ml=et,
                card="card")
    saved = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert set(saved["files"]) == {"risk_head.safetensors", ML_FILE, "card.md"}
    assert not list((tmp_path / "b").glob("*.skops"))
    b = load_bundle(tmp_path / "b")
    assert np.array_equal(b.ml.predict_proba(X), et.predict_proba(X))
    assert np.array_equal(b.risk_weight, demo.risk_weight) and b.risk_bias == demo.risk_bias


def _mutations():
    def set_(name, fn):
        return lambda a: a.__setitem__(name, fn(a[name]))

    def child_out_of_range(a):
        left = a["tree.0.left_child"].copy()
        left[0] = len(left) + 5
        a["tree.0.left_child"] = left

    def child_before_parent(a):  # a cycle back to the root
        inner = np.flatnonzero(a["tree.0.left_child"] != -1)
        right = a["tree.0.right_child"].copy()
        right[inner[-1]] = 0
        a["tree.0.right_child"] = right

    def feature_too_large(a):
        feat = a["tree.0.feature"].copy()
        feat[0] = 10_000
        a["tree.0.feature"] = feat

    def nan_threshold(a):
        thr = a["tree.0.threshold"].copy()
        thr[0] = np.nan
        a["tree.0.threshold"] = thr

    return {
        "child-out-of-range": child_out_of_range,
        "child-before-parent": child_before_parent,
        "feature-too-large": feature_too_large,
        "negative-feature": set_("tree.1.feature", lambda f: np.where(f >= 0, -7, f).astype(np.int32)),
        "nan-threshold": nan_threshold,
        "wrong-dtype": set_("tree.0.left_child", lambda v: v.astype(np.float64)),
        "value-shape": set_("tree.0.value", lambda v: v[:-1]),
        "short-field": set_("tree.0.impurity", lambda v: v[:-1]),
        "one-child": set_("tree.0.right_child", lambda v: np.where(np.arange(len(v)) == 0, -1, v).astype(np.int32)),
        "missing-array": lambda a: a.pop("tree.2.threshold"),
        "extra-array": lambda a: a.__setitem__("tree.99.value", np.zeros((1, 1, 2))),
    }


@pytest.mark.parametrize("name", list(_mutations()))
def test_crafted_tree_arrays_are_refused(tmp_path, name):
    from safetensors.numpy import load, save

    from panderm.tbp.forest import load_forest, save_forest

    et, X = fitted_forest()
    path = tmp_path / "f.safetensors"
    record = save_forest(et, path)
    arrays = dict(load(path.read_bytes()))
    _mutations()[name](arrays)
    path.write_bytes(save(arrays))
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\")):
        load_forest(path, record)


def test_record_that_disagrees_with_the_file_is_refused(tmp_path):
    from panderm.tbp.forest import load_forest, save_forest

    et, _ = fitted_forest()
    record = save_forest(et, tmp_path / "f.safetensors")
    with pytest.raises(CheckpointError, match="13 trees"):
        load_forest(tmp_path / "f.safetensors", dict(record, n_trees=13))
    with pytest.raises(CheckpointError, match="feature index out of range"):
        load_forest(tmp_path / "f.safetensors", dict(record, n_features=1))


# --------------------------------------------------------------------------- 2. real payloads


def test_skops_payload_is_live(tmp_path):
    """Positive control: the payload really runs code under skops with the old allow-list of prefixes."""
    sio = pytest.importorskip("skops.io")
    marker = tmp_path / "control"
    (tmp_path / "p.skops").write_bytes(skops_runstring_payload(marker))
    untrusted = sio.get_untrusted_types(file=str(tmp_path / "p.skops"))
    assert untrusted == ["numpy.testing._private.utils.runstring"]  # passed the old "numpy." prefix check
    sio.load(str(tmp_path / "p.skops"), trusted=untrusted)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("as_name", ["extra_trees.skops", "extra_trees.safetensors"])
def test_skops_runstring_bundle_is_refused(cli, tmp_path, as_name):
    from panderm.tbp.bundle import load_bundle

    bundle = copy_demo_bundle(tmp_path / "bundle")
    marker = tmp_path / "marker"
    (bundle / as_name).write_bytes(skops_runstring_payload(marker))
    if as_name.endswith(".safetensors"):
        rehash(bundle, as_name)
    with pytest.raises(CheckpointError) as err:
        load_bundle(bundle)
    assert as_name in str(err.value)
    if as_name.endswith(".skops"):
        assert "panderm tbp train" in err.value.hint
    res = cli(["screen-tbp", "--demo", "--run", str(bundle), "--out", str(tmp_path / "rep"), "--quiet"])
    assert_clean_error(res, as_name)
    assert not marker.exists()
    assert not (tmp_path / "rep" / "lesions.csv").exists()


def test_pickle_payload_is_live(tmp_path):
    """Positive control: unpickling the payload really runs its command."""
    marker = tmp_path / "control"
    pickle.loads(pickle_payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("member", ["risk_head.safetensors", "extra_trees.safetensors", "encoder.safetensors"])
def test_pickle_reduce_member_is_refused(cli, tmp_path, member):
    bundle = copy_demo_bundle(tmp_path / "bundle")
    marker = tmp_path / "marker"
    (bundle / member).write_bytes(pickle_payload(marker))
    if member == "encoder.safetensors":  # a bundle that claims to carry its own encoder
        edit_meta(bundle, lambda m: m["encoder"].update(file="encoder.safetensors", finetuned=True))
    rehash(bundle, member)
    res = cli(["screen-tbp", "--demo", "--run", str(bundle), "--out", str(tmp_path / "rep"), "--quiet"])
    assert_clean_error(res, member)
    assert res.output.startswith("Error:")
    assert not marker.exists()


def test_pickle_member_with_stale_hash_is_refused_before_reading(tmp_path):
    from panderm.tbp.bundle import load_bundle

    bundle = copy_demo_bundle(tmp_path / "bundle")
    marker = tmp_path / "marker"
    (bundle / "extra_trees.safetensors").write_bytes(pickle_payload(marker))
    with pytest.raises(CheckpointError, match="extra_trees.safetensors has changed"):
        load_bundle(bundle)
    assert not marker.exists()


# --------------------------------------------------------------------------- 3. hashes and schema


def test_changed_member_byte_names_the_file(tmp_path):
    from panderm.tbp.bundle import load_bundle

    bundle = copy_demo_bundle(tmp_path / "bundle")
    data = bytearray((bundle / "importance.csv").read_bytes())
    data[-2] = ord("7") if data[-2] != ord("7") else ord("8")
    (bundle / "importance.csv").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="importance.csv has changed"):
        load_bundle(bundle)


@pytest.mark.parametrize("path, expected", [
    (("thresholds",), "missing the key thresholds"),
    (("ud", "k"), "missing the key ud/k"),
    (("ml", "model"), "missing the key ml/model"),
    (("encoder", "dim"), "missing the key encoder/dim"),
])
def test_deleted_key_is_named(cli, tmp_path, path, expected):
    bundle = copy_demo_bundle(tmp_path / "bundle")

    def drop(meta):
        node = meta
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    edit_meta(bundle, drop)
    res = cli(["screen-tbp", "--demo", "--run", str(bundle), "--out", str(tmp_path / "rep"), "--quiet"])
    assert_clean_error(res, expected, "bundle.json")
    assert "KeyError" not in res.output


@pytest.mark.parametrize("edit, key", [
    (lambda m: m["ud"].__setitem__("min_lesions", "four"), "ud/min_lesions"),
    (lambda m: m["thresholds"].__setitem__("risk", [0.5]), "thresholds/risk"),
    (lambda m: m["ml"].__setitem__("file", "../../etc/passwd"), "ml/file"),
    (lambda m: m["files"].__setitem__("card.md", "not-a-hash"), "files/card.md"),
    (lambda m: m["encoder"].__setitem__("dim", 12.5), "encoder/dim"),
])
def test_wrong_type_is_named(tmp_path, edit, key):
    from panderm.tbp.bundle import load_bundle

    bundle = copy_demo_bundle(tmp_path / "bundle")
    edit_meta(bundle, edit)
    with pytest.raises(CheckpointError, match=f"key {key} is invalid"):
        load_bundle(bundle)


def test_bundle_without_file_hashes_is_refused(tmp_path):
    from panderm.tbp.bundle import load_bundle

    bundle = copy_demo_bundle(tmp_path / "bundle")
    edit_meta(bundle, lambda m: (m.pop("files"), m.__setitem__("version", 1)))
    with pytest.raises(CheckpointError, match="older panderm") as err:
        load_bundle(bundle)
    assert "panderm tbp train" in err.value.hint


def test_the_shipped_demo_bundle_has_the_new_format():
    from panderm.tbp.bundle import VERSION, demo_bundle_path, load_bundle

    meta = json.loads((demo_bundle_path() / "bundle.json").read_text())
    assert meta["version"] == VERSION and not list(demo_bundle_path().glob("*.skops"))
    assert {"risk_head.safetensors", "extra_trees.safetensors", "importance.csv", "card.md"} <= set(meta["files"])
    b = load_bundle()
    assert b.ml.n_features_in_ == len(meta["ml"]["columns"]) == meta["ml"]["model"]["n_features"]


# --------------------------------------------------------------------------- 4. relative paths


def test_screen_relative_paths_from_the_data_parent(cli, shared_data, tmp_path, monkeypatch):
    tiles = ham_tiles(shared_data, 6)
    pt1 = tmp_path / "cohort" / "pt1"
    (pt1 / "sub").mkdir(parents=True)
    for t in tiles[:4]:
        shutil.copyfile(t, pt1 / t.name)
    for t in tiles[4:]:
        shutil.copyfile(t, pt1 / "sub" / t.name)
    images = [f"./{tiles[0].name}", tiles[1].name, tiles[2].name, tiles[3].name,
              f"sub\\{tiles[4].name}", f"./sub/{tiles[5].name}"]
    pd.DataFrame({"lesion_id": [f"L{i}" for i in range(6)], "image": images}).to_csv(pt1 / "measurements.csv",
                                                                                    index=False)
    monkeypatch.chdir(tmp_path)
    res = cli(["screen-tbp", "cohort/pt1", "--out", "rep", "--quiet"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "rep" / "lesions.csv")
    assert sorted(df["lesion_id"]) == [f"L{i}" for i in range(6)]  # every lesion screened, none added twice
    assert pd.read_csv(tmp_path / "rep" / "skipped.csv").empty
    assert (tmp_path / "rep" / "reports" / "pt1.html").is_file()
    res = cli(["screen-tbp", "cohort", "--out", "rep2", "--quiet"])  # the cohort form, relative too
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "rep2" / "lesions.csv")) == 6


def test_rows_naming_the_same_tile_are_encoded_once(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    tiles = ham_tiles(shared_data, 4)
    pt = tmp_path / "pt"
    pt.mkdir()
    for t in tiles:
        shutil.copyfile(t, pt / t.name)
    images = [t.name for t in tiles] + [f"./{tiles[0].name}"]
    pd.DataFrame({"lesion_id": [f"L{i}" for i in range(5)], "image": images}).to_csv(pt / "measurements.csv",
                                                                                    index=False)
    res = screen_tbp(pt, tmp_path / "rep", progress=False)
    assert any("encoded once" in w and tiles[0].name in w for w in res.warnings)
    df = res.lesions.set_index("lesion_id")
    assert len(df) == 5 and df.at["L0", "risk_score"] == df.at["L4", "risk_score"]
    listing = pd.read_csv(tmp_path / "rep" / ".work" / "tiles.csv")
    assert len(listing) == 4


def test_train_relative_root_from_any_cwd(cli, shared_data, tmp_path, monkeypatch):
    from tests.test_tbp_train import MODEL, build_cohort

    csv, _ = build_cohort(shared_data, tmp_path / "data")
    df = pd.read_csv(csv)
    df["image"] = ["./" + i if k % 2 else i for k, i in enumerate(df["image"])]
    df.to_csv(csv, index=False)
    monkeypatch.chdir(tmp_path / "data")
    res = cli(["tbp", "train", "--csv", "lesions.csv", "--root", "tiles/", "--model", MODEL, "--trees", "5",
               "--folds", "3", "--measure-from-image", "--out", "../bundle", "--quiet"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert metrics["skipped"] == 0 and metrics["n_train"] + metrics["n_val"] == len(df)


@pytest.mark.parametrize("value", ["../outside.jpg", "sub/../../outside.jpg", "/etc/hosts", "C:\\x\\y.jpg"])
def test_csv_path_leaving_root_is_refused_naming_the_row(cli, shared_data, tmp_path, value):
    from tests.test_tbp_train import build_cohort, train_args

    csv, tiles = build_cohort(shared_data, tmp_path / "data")
    df = pd.read_csv(csv)
    df.loc[3, "image"] = value
    df.to_csv(csv, index=False)
    res = cli(train_args(csv, tiles, tmp_path / "b", "--measure-from-image"))
    assert_clean_error(res, f"{csv} row 5", "leaves --root")
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_absolute_paths_without_root_and_symlinked_root_are_allowed(shared_data, tmp_path):
    from panderm.tbp.inputs import read_lesions_csv

    tiles = ham_tiles(shared_data, 3)
    real = tmp_path / "real"
    real.mkdir()
    for t in tiles:
        shutil.copyfile(t, real / t.name)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    csv = tmp_path / "abs.csv"
    pd.DataFrame({"patient_id": "p", "image": [str(real / t.name) for t in tiles]}).to_csv(csv, index=False)
    assert len(read_lesions_csv(csv).df) == 3
    rel = tmp_path / "rel.csv"
    pd.DataFrame({"patient_id": "p", "image": [t.name for t in tiles]}).to_csv(rel, index=False)
    table = read_lesions_csv(rel, root=tmp_path / "link")
    assert len(table.df) == 3 and not table.skipped
    assert all(p.startswith(str(tmp_path / "link")) for p in table.df["path"])


# --------------------------------------------------------------------------- 5. names that become files


def _isic_metadata(shared_data: Path, folder: Path, ids: list[str]) -> Path:
    src = shared_data / "isic2024_tbp_tiles"
    meta = pd.read_csv(src / "labels.csv").drop(columns=["image", "label", "split"])
    rows = pd.concat([meta] + [meta.iloc[[0]].assign(isic_id=i) for i in ids], ignore_index=True)
    folder.mkdir(parents=True)
    rows.to_csv(folder / "train-metadata.csv", index=False)
    return folder / "train-metadata.csv"


def test_unsafe_isic_ids_in_hdf5_are_skipped_and_nothing_escapes(cli, shared_data, tmp_path):
    h5py = pytest.importorskip("h5py")
    src = shared_data / "isic2024_tbp_tiles"
    evil_abs = tmp_path / "abs_target"
    bad_ids = ["../../evil", str(evil_abs), "sub/evil", ".hidden"]
    data = tmp_path / "isic"
    _isic_metadata(shared_data, data, bad_ids)
    good = pd.read_csv(src / "labels.csv")["isic_id"].tolist()
    with h5py.File(data / "train-image.hdf5", "w") as f:
        for i in good:
            f[i] = np.void((src / "images" / f"{i}.jpg").read_bytes())
        jpeg = np.void((src / "images" / f"{good[0]}.jpg").read_bytes())
        f.create_dataset("evil", data=jpeg)  # reachable as "../../evil" if keys were joined to paths
        f.create_group("sub").create_dataset("evil", data=jpeg)  # "sub/evil" is a real HDF5 path
    out = tmp_path / "deep" / "out"
    res = cli(["screen-tbp", str(data), "--format", "isic2024", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    assert sorted(skipped["lesion_id"]) == sorted(bad_ids)
    assert skipped["reason"].str.contains("unsafe isic_id").all()
    assert len(pd.read_csv(out / "lesions.csv")) == len(good)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "deep" / "evil.jpg").exists()
    assert not Path(f"{evil_abs}.jpg").exists()
    tiles = out / ".work" / "tiles"
    assert sorted(p.name for p in tiles.iterdir()) == sorted([f"{i}.jpg" for i in good] + [".source.json"])


def test_unpack_hdf5_never_writes_outside_dest(tmp_path):
    h5py = pytest.importorskip("h5py")
    from panderm.tbp.isic_tiles import unpack_hdf5

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_group("a").create_dataset("b", data=np.void(b"\xff\xd8x"))
        f["ok"] = np.void(b"\xff\xd8y")
    dest = tmp_path / "d" / "tiles"
    got = unpack_hdf5(tmp_path / "x.h5", ["a/b", "../a/b", "ok", "/abs"], dest)
    assert list(got) == ["ok"] and sorted(p.name for p in dest.iterdir()) == ["ok.jpg"]
    assert not (tmp_path / "d" / "a").exists()


def test_unsafe_isic_id_in_image_folder_is_skipped(shared_data, tmp_path):
    from panderm.tbp.inputs import read_isic2024

    src = shared_data / "isic2024_tbp_tiles"
    meta = _isic_metadata(shared_data, tmp_path / "isic", ["../../images/ISIC_0015657", "/tmp/abs"])
    table = read_isic2024(meta, images=src / "images")
    assert len(table.df) == 3
    assert sorted(s["lesion_id"] for s in table.skipped) == ["../../images/ISIC_0015657", "/tmp/abs"]


def test_any_patient_id_gets_a_report_that_stays_inside_out(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    tiles = ham_tiles(shared_data, 8)
    root = tmp_path / "tiles"
    root.mkdir()
    for t in tiles:
        shutil.copyfile(t, root / t.name)
    pids = ["../../evil"] * 2 + ["/tmp/abs_pid"] * 2 + ["Patient 1"] * 2 + ["P_ok"] * 2
    csv = tmp_path / "lesions.csv"
    pd.DataFrame({"patient_id": pids, "image": [f"tiles/{t.name}" for t in tiles]}).to_csv(csv, index=False)
    out = tmp_path / "a" / "b" / "out"
    res = screen_tbp(csv, out, progress=False)
    assert res.n_lesions == 8 and res.n_skipped == 0
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["P_ok.html", "Patient_1.html", "evil.html",
                                                                   "tmp_abs_pid.html"]
    lesions = pd.read_csv(out / "lesions.csv", dtype={"patient_id": str})
    assert set(lesions["patient_id"]) == set(pids)  # the ids themselves are kept as they were
    assert not (tmp_path / "a" / "evil.html").exists() and not Path("/tmp/abs_pid.html").exists()


# --------------------------------------------------------------------------- 6. bad measurement values


def test_implausible_measurements_are_missing_with_one_warning_per_column():
    from panderm.tbp.measurements import PLAUSIBLE_RANGES, VECTRA_MEASUREMENTS, measurement_matrix

    assert set(PLAUSIBLE_RANGES) == set(VECTRA_MEASUREMENTS)
    df = pd.DataFrame({"areaMM2": [4.0, -3.0, np.inf, 2.0, 1e12], "eccentricity": [0.5, 1.5, 0.2, -np.inf, 0.1],
                       "L": [50.0, 40.0, np.nan, 60.0, 70.0], "deltaL": [-5.0, -150.0, 3.0, 0.0, -1.0]})
    fills = {"areaMM2": 10.0, "eccentricity": 0.3, "L": 55.0, "deltaL": -2.0}
    X, report = measurement_matrix(df, ["areaMM2", "eccentricity", "L", "deltaL"], fill_values=fills)
    assert X[:, 0].tolist() == [4.0, 10.0, 10.0, 2.0, 10.0]
    assert X[:, 1].tolist() == [0.5, 0.3, 0.2, 0.3, 0.1]
    assert X[:, 2].tolist() == [50.0, 40.0, 55.0, 60.0, 70.0]
    assert X[:, 3].tolist() == [-5.0, -2.0, 3.0, 0.0, -1.0]  # negative contrast is normal; -150 is not
    assert report.implausible == {"areaMM2": 3, "eccentricity": 2, "deltaL": 1}
    lines = [w for w in report.warnings() if "plausible range" in w]
    assert len(lines) == 3
    assert any(w.startswith("areaMM2: 3 values") for w in lines)
    assert any(w.startswith("eccentricity: 2 values") and "[0, 1]" in w for w in lines)
    assert report.imputed_cells == {"areaMM2": 3, "eccentricity": 2, "L": 1, "deltaL": 1}


def test_training_medians_ignore_implausible_values():
    from panderm.tbp.measurements import fit_fill_values

    fills = fit_fill_values(pd.DataFrame({"areaMM2": [1.0, 2.0, 3.0, -1e9, -1e9, -1e9]}), ["areaMM2"])
    assert fills == {"areaMM2": 2.0}


def test_screen_warns_about_negative_measurements(cli, tmp_path):
    from tests.test_tbp_screen import vectra_bundle

    from panderm.tbp.bundle import demo_patient_path

    bundle = vectra_bundle(tmp_path / "vb")
    pt = tmp_path / "pt"
    shutil.copytree(demo_patient_path(), pt)
    m = pd.read_csv(pt / "measurements.csv")
    m["A"], m["B"] = 20.0, 30.0
    m["areaMM2"] = [-1.0 if i < 3 else 5.0 for i in range(len(m))]
    m.to_csv(pt / "measurements.csv", index=False)
    res = cli(["screen-tbp", str(pt), "--run", str(bundle), "--out", str(tmp_path / "rep"), "--quiet"])
    assert res.exit_code == 0, res.output
    warn = [line for line in res.output.splitlines() if line.startswith("Warning: areaMM2: 3 values")]
    assert len(warn) == 1 and "treated as missing" in warn[0]


# --------------------------------------------------------------------------- 7. UD did not run


def test_ud_distance_is_empty_and_na_when_the_test_did_not_run(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    tiles = ham_tiles(shared_data, 7)
    cohort = tmp_path / "cohort"
    for name, part in (("small", tiles[:2]), ("big", tiles[2:])):
        (cohort / name).mkdir(parents=True)
        for t in part:
            shutil.copyfile(t, cohort / name / t.name)
    out = tmp_path / "rep"
    screen_tbp(cohort, out, progress=False)
    text = (out / "lesions.csv").read_text().splitlines()
    header = text[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in text[1:]]
    small = [r for r in rows if r["patient_id"] == "small"]
    big = [r for r in rows if r["patient_id"] == "big"]
    assert len(small) == 2 and all(r["ud_distance"] == "" for r in small)
    assert all(float(r["ud_distance"]) > 0 for r in big)
    html = (out / "reports" / "small.html").read_text()
    na = '<td>Ugly duckling</td><td class="na">n/a</td>'
    assert html.count(na) == 2 and html.count("this patient has 2") == 2
    assert na not in (out / "reports" / "big.html").read_text()
    assert all(r["not_run_reason"].startswith("ugly duckling: needs >= 4") for r in small)


# --------------------------------------------------------------------------- 8. fine-tuning resume


@pytest.mark.slow
def test_finetune_resume_refuses_a_changed_table(cli, shared_data, tmp_path):
    from tests.test_tbp_train import build_cohort, train_args

    csv, tiles = build_cohort(shared_data, tmp_path / "data")
    df = pd.read_csv(csv)
    df["split"] = np.where(df["patient_id"].isin(["P4", "P5"]), "val", "train")
    df.to_csv(csv, index=False)
    out = tmp_path / "ft"
    args = ["--no-ml", "--risk-head", "finetune", "--max-steps", "1", "--batch-size", "4"]
    res = cli(train_args(csv, tiles, out, *args, "--keep-work"))
    assert res.exit_code == 0, res.output
    assert (out / ".work" / "finetune" / "inputs.json").is_file()

    changed = df.copy()  # swap two training labels: same size and class balance, other table
    mal = changed.index[(changed["label"] == 1) & (changed["split"] == "train")][0]
    ben = changed.index[(changed["label"] == 0) & (changed["split"] == "train")][0]
    changed.loc[[mal, ben], "label"] = [0, 1]
    bad = tmp_path / "data" / "changed.csv"
    changed.to_csv(bad, index=False)
    res = cli(train_args(bad, tiles, out, *args, "--resume", "--keep-work"))
    assert_clean_error(res, "cannot resume", "2 row(s) changed")

    res = cli(train_args(csv, tiles, out, *args, "--resume"))
    assert res.exit_code == 0, res.output


def test_mask_paths_follow_the_tile_rules(shared_data, tmp_path, monkeypatch):
    from panderm.tbp.inputs import read_patient_folder

    tile = ham_tiles(shared_data, 1)[0]
    pt = tmp_path / "pt"
    (pt / "masks").mkdir(parents=True)
    shutil.copyfile(tile, pt / tile.name)
    pd.DataFrame({"image": [tile.name], "mask": ["masks\\m.png"]}).to_csv(pt / "measurements.csv", index=False)
    monkeypatch.chdir(tmp_path)
    table = read_patient_folder("pt")
    assert table.df.at[0, "mask"] == str(pt / "masks" / "m.png")
    pd.DataFrame({"image": [tile.name], "mask": ["../../m.png"]}).to_csv(pt / "measurements.csv", index=False)
    with pytest.raises(InputError, match="row 2"):
        read_patient_folder("pt")
