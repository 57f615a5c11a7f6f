"""The reusable trainer: schedule, param groups, accumulation, checkpoints, failures, exact resume (1 and 2 ranks)."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_tiny import IndexOnlyData, NoisyData, TinyModel  # noqa: E402

from panderm.errors import ConfigError, PandermError  # noqa: E402
from panderm.train.optim import default_param_groups, lr_at, scaled_lr  # noqa: E402
from panderm.train.trainer import TrainConfig, Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=4, lr=1e-2, lr_base_batch=4, warmup_steps=2, precision="fp32",
                checkpoint_every=2, log_every=1, num_workers=0, progress=False)
    return TrainConfig(**{**base, **kw})


def log_lines(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]


def curve(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in log_lines(out)]


def test_lr_schedule_warmup_cosine_and_batch_scaling(tmp_path):
    kw = dict(base_lr=1.0, min_lr=0.01, warmup_steps=4, total_steps=20)
    assert [lr_at(s, **kw) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    after = [lr_at(s, **kw) for s in range(4, 20)]
    assert all(a > b for a, b in zip(after, after[1:]))
    assert lr_at(19, **kw) == pytest.approx(0.01)
    assert lr_at(4 + 15 // 2, **kw) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert scaled_lr(1.5e-3, 2048, 256) == pytest.approx(1.2e-2)
    # in the trainer: global batch 4 × accum 2 = 8 over base 4 → lr doubled; warm-up from epochs
    r = Trainer(TinyModel(0.0), NoisyData(24), cfg(lr=1e-3, accum_steps=2, warmup_steps=None, warmup_epochs=1,
                                                    steps=7, min_lr=1e-5), tmp_path / "r").fit()
    resolved = json.loads((r.out / "config.json").read_text())["resolved"]
    assert resolved == {**resolved, "lr": 2e-3, "global_batch": 8, "world_size": 1, "steps_per_epoch": 3,
                        "warmup_steps": 3, "steps": 7}
    lrs = [rec["lr"] for rec in log_lines(r.out)]
    assert lrs[:4] == pytest.approx([0.0, 2e-3 / 3, 4e-3 / 3, 2e-3])
    assert lrs[-1] == pytest.approx(1e-5)


def test_param_groups_skip_decay_for_1d_bias_tokens_and_frozen():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.mask_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.gamma_1 = nn.Parameter(torch.ones(8))
            self.proj = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.frozen = nn.Linear(8, 8)
            self.frozen.requires_grad_(False)

    m = M()
    groups = {g["name"]: g for g in default_param_groups(m, 0.05)}
    names = {id(p): n for n, p in m.named_parameters()}
    assert [names[id(p)] for p in groups["decay"]["params"]] == ["proj.weight"]
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in groups["no_decay"]["params"]) == sorted(
        ["pos_embed", "cls_token", "mask_token", "gamma_1", "proj.bias", "norm.weight", "norm.bias"])


def test_accumulation_matches_a_bigger_batch(tmp_path):
    a = TinyModel(0.0)
    b = TinyModel(0.0)
    Trainer(a, NoisyData(24), cfg(batch_size=2, accum_steps=2, steps=4), tmp_path / "a").fit()
    Trainer(b, NoisyData(24), cfg(batch_size=4, accum_steps=1, steps=4), tmp_path / "b").fit()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=n)
    la, lb = log_lines(tmp_path / "a"), log_lines(tmp_path / "b")
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)


def test_checkpoints_rotate_and_load_weights_only(tmp_path):
    out = tmp_path / "run"
    r = Trainer(TinyModel(), NoisyData(24), cfg(steps=7, checkpoint_every=2, keep_last=2), out).fit()
    names = sorted(p.name for p in out.glob("checkpoint-*.pth"))
    assert names == ["checkpoint-0000006.pth", "checkpoint-0000007.pth", "checkpoint-last.pth"]
    assert r.checkpoints[-1] == out / "checkpoint-0000007.pth"
    last = torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert set(last) == set(TinyModel().state_dict())
    assert all(torch.equal(last[k], v) for k, v in torch.load(r.checkpoints[-1], weights_only=True).items())
    state = torch.load(out / "train-state.pt", weights_only=True)
    assert state["step"] == 7 and len(state["rng"]) == 1
    assert not list(out.glob(".*.tmp"))


def test_export_fn_controls_the_checkpoint_content(tmp_path):
    out = tmp_path / "run"
    Trainer(TinyModel(), NoisyData(24), cfg(steps=2), out,
            export_fn=lambda m: {"encoder.w": m.fc1.weight.detach().clone()}).fit()
    assert list(torch.load(out / "checkpoint-last.pth", weights_only=True)) == ["encoder.w"]


def test_failed_checkpoint_write_keeps_previous_files(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def flaky_save(obj, f, *a, **kw):
        calls.append(Path(f).name)
        if len(calls) > 2:  # step 2: checkpoint + train-state succeed; step 4 fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(PandermError) as exc:
        Trainer(TinyModel(), NoisyData(24), cfg(steps=6), out).fit()
    msg = str(exc.value)
    assert "checkpoint-0000004.pth" in msg and "No space left on device" in msg
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pth", ".pt")) == [
        "checkpoint-0000002.pth", "checkpoint-last.pth", "train-state.pt"]
    assert torch.load(out / "train-state.pt", weights_only=True)["step"] == 2
    torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert not list(out.glob(".*.tmp"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(PandermError, match=r"loss became nan at step 3; last good checkpoint: .*checkpoint-last"
                                           r"\.pth \(step 2\)"):
        Trainer(TinyModel(nan_at_call=3), NoisyData(24), cfg(steps=6), out).fit()
    last = torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last.values())
    assert not (out / "checkpoint-0000003.pth").exists()
    assert torch.load(out / "train-state.pt", weights_only=True)["step"] == 2


def test_resume_refuses_a_changed_config_and_a_reused_folder(tmp_path):
    out = tmp_path / "run"
    rc = {"model": "tiny", "mask_ratio": 0.5, "steps": 4}
    Trainer(TinyModel(), NoisyData(24), cfg(steps=4), out, run_config=rc).fit()
    with pytest.raises(PandermError, match="already holds a training run"):
        Trainer(TinyModel(), NoisyData(24), cfg(steps=4), out, run_config=rc).fit()
    with pytest.raises(PandermError) as exc:
        Trainer(TinyModel(), NoisyData(24), cfg(steps=6, lr=2e-2), out, resume=True,
                run_config={**rc, "mask_ratio": 0.6, "steps": 6}).fit()
    msg = str(exc.value)
    assert "mask_ratio: 0.5 → 0.6" in msg and "lr: 0.01 → 0.02" in msg and "steps:" not in msg
    with pytest.raises(PandermError, match="nothing to resume"):
        Trainer(TinyModel(), NoisyData(24), cfg(), tmp_path / "empty", resume=True).fit()
    # more steps (ignored key) is fine
    r = Trainer(TinyModel(), NoisyData(24), cfg(steps=6), out, resume=True, run_config={**rc, "steps": 6}).fit()
    assert r.steps == 6 and [x["step"] for x in log_lines(out)] == [1, 2, 3, 4, 5, 6]


def test_config_errors():
    with pytest.raises(ConfigError, match="exactly one of steps or epochs"):
        Trainer(TinyModel(), NoisyData(), TrainConfig(), Path("unused"))
    with pytest.raises(ConfigError, match="dataset too small"):
        Trainer(TinyModel(), NoisyData(4), cfg(batch_size=8), Path("unused")).fit()


@pytest.mark.parametrize("kind", ["epoch_aware_workers", "index_only"])
def test_kill_and_resume_gives_a_bit_identical_curve(tmp_path, kind):
    def data():
        return NoisyData(24) if kind == "epoch_aware_workers" else IndexOnlyData(24)

    c = cfg(steps=12, checkpoint_every=4, num_workers=1 if kind == "epoch_aware_workers" else 0)
    Trainer(TinyModel(), data(), c, tmp_path / "a", run_config={"x": 1}).fit()
    r = Trainer(TinyModel(), data(), cfg(**{**c.__dict__, "stop_after_steps": 10}), tmp_path / "b",
                run_config={"x": 1}).fit()
    assert r.interrupted and len(log_lines(tmp_path / "b")) == 10  # steps 9-10 are lost with the "kill"
    with open(tmp_path / "b" / "log.jsonl", "a") as f:
        f.write('{"step": 11, "lo')  # killed mid-write
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    Trainer(TinyModel(), data(), c, tmp_path / "b", run_config={"x": 1}, resume=True).fit()
    a, b = curve(tmp_path / "a"), curve(tmp_path / "b")
    assert a == b  # exact floats, including the dropout-dependent losses
    assert set(a[0]) >= {"step", "epoch", "loss", "lr", "mae", "skipped", "grad_norm"}
    assert "samples_per_s" in log_lines(tmp_path / "a")[0] and a[-1]["epoch"] == 2.0
    wa = torch.load(tmp_path / "a" / "checkpoint-last.pth", weights_only=True)
    wb = torch.load(tmp_path / "b" / "checkpoint-last.pth", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_is_bit_identical_with_two_gloo_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--standalone",
                           str(REPO / "tests" / "_ddp_resume.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "result.json").read_text()) == {"weights_equal": True, "world": 2}
    a, b = curve(tmp_path / "a"), curve(tmp_path / "b")
    assert len(a) == 8 and a == b


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_mixed_precision_runs(tmp_path, precision):
    r = Trainer(TinyModel(), NoisyData(24), cfg(steps=3, precision=precision), tmp_path / "r").fit()
    assert r.steps == 3 and math.isfinite(r.final_loss)
    run_precision = json.loads((tmp_path / "r" / "config.json").read_text())
    assert precision != "bf16" or "bf16" in json.dumps(run_precision)


def test_fp16_on_cpu_is_refused_with_the_alternatives(tmp_path):
    from panderm.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16 needs a CUDA device") as info:
        Trainer(TinyModel(), NoisyData(24), cfg(steps=3, precision="fp16"), tmp_path / "r").fit()
    assert "bf16" in info.value.hint and "fp32" in info.value.hint


def _eval_fn(values):
    """An eval_fn returning the next value of ``values`` (and drawing random numbers, which must not leak)."""
    it = iter(values)

    def run(model):
        assert not model.training  # the trainer switches to eval mode for evaluation
        torch.rand(5), random.random(), np.random.rand()
        return {"score": next(it), "other": 1.0}

    return run


def test_eval_hook_keeps_the_best_checkpoint_and_resumes_it(tmp_path):
    scores = [0.2, 0.9, 0.5, 0.7]  # 4 evaluations: steps 3, 6, 9, 12 (one per epoch of 3 steps)
    c = cfg(steps=12, checkpoint_every=6)
    plain = Trainer(TinyModel(), NoisyData(12), c, tmp_path / "plain").fit()
    r = Trainer(TinyModel(), NoisyData(12), c, tmp_path / "a", eval_fn=_eval_fn(scores), monitor="score").fit()
    assert r.best["step"] == 6 and r.best["value"] == 0.9
    assert json.loads((tmp_path / "a" / "best.json").read_text())["step"] == 6
    evals = [rec for rec in log_lines(tmp_path / "a") if "eval" in rec]
    assert [e["step"] for e in evals] == [3, 6, 9, 12] and [e["eval"]["score"] for e in evals] == scores
    # evaluation neither changes training nor its random numbers
    assert [x for x in curve(tmp_path / "a") if "eval" not in x] == curve(tmp_path / "plain")
    best = torch.load(tmp_path / "a" / "checkpoint-best.pth", weights_only=True)
    last = torch.load(tmp_path / "a" / "checkpoint-last.pth", weights_only=True)
    assert set(best) == set(last) and not all(torch.equal(best[k], last[k]) for k in best)
    # killed after step 7 (checkpoint at 6 holds best = step 6); the resumed run keeps it against 0.5 and 0.7
    Trainer(TinyModel(), NoisyData(12), cfg(**{**c.__dict__, "stop_after_steps": 7}), tmp_path / "b",
            eval_fn=_eval_fn(scores), monitor="score").fit()
    r2 = Trainer(TinyModel(), NoisyData(12), c, tmp_path / "b", eval_fn=_eval_fn(scores[2:]), monitor="score",
                 resume=True).fit()
    assert r2.best["step"] == 6 and r2.best["value"] == 0.9
    b_best = torch.load(tmp_path / "b" / "checkpoint-best.pth", weights_only=True)
    assert all(torch.equal(best[k], b_best[k]) for k in best)
    with pytest.raises(ConfigError, match="not among the evaluation metrics"):
        Trainer(TinyModel(), NoisyData(12), c, tmp_path / "c", eval_fn=_eval_fn(scores), monitor="nope").fit()
    with pytest.raises(ConfigError, match="needs an eval_fn"):
        Trainer(TinyModel(), NoisyData(12), c, tmp_path / "d", monitor="score")
