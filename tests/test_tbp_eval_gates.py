"""``tbp eval`` with the image gates: refused lesions count as missed, and the command says how many."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from panderm.tbp.bundle import demo_bundle_path


def test_eval_counts_not_assessable_lesions(cli, shared_data, tmp_path, monkeypatch):
    from PIL import Image, ImageFilter

    src = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv").drop_duplicates("lesion_id")
    mal = labels[labels["binary_label"] == 1].head(3)
    ben = labels[labels["binary_label"] == 0].head(5)
    (tmp_path / "imgs").mkdir()
    rows = []
    for _, r in pd.concat([mal, ben]).iterrows():
        shutil.copyfile(src / "images" / r["image"], tmp_path / "imgs" / r["image"])
        rows.append({"patient_id": "P1", "lesion_id": r["lesion_id"], "image": r["image"],
                     "label": int(r["binary_label"])})
    first = mal["image"].iloc[0]  # a malignant lesion photographed out of focus
    with Image.open(tmp_path / "imgs" / first) as im:
        im.convert("RGB").filter(ImageFilter.GaussianBlur(8)).save(tmp_path / "imgs" / first, quality=95)
    pd.DataFrame(rows).to_csv(tmp_path / "lesions.csv", index=False)
    monkeypatch.chdir(tmp_path)
    res = cli(["tbp", "eval", "--run", str(demo_bundle_path()), "--csv", "lesions.csv", "--root", "imgs",
               "--out", "ev"])
    assert res.exit_code == 0, res.output
    assert "not assessable (image gates; counted as not flagged): 1 lesion(s), 1 malignant" in res.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (m["n_not_assessable"], m["n_not_assessable_malignant"]) == (1, 1)
    assert m["ood_gate"]["method"] == "whitened-1nn"
    assert any("were not assessable" in w for w in m["warnings"])
    lesions = pd.read_csv(tmp_path / "ev" / "lesions.csv")
    blurred = lesions.set_index("image").loc[first]
    assert not blurred["assessable"] and not blurred["flagged"] and "too blurred" in blurred["not_assessable_reason"]
