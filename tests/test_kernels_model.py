"""The encoder and regressor give the same loss and gradients with the torch and Triton backends.

Triton runs on CPU under its interpreter, so the check runs in a subprocess
with ``TRITON_INTERPRET=1`` set before anything imports triton.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os
    import torch
    import panderm_kernels
    from panderm.models.factory import create_encoder
    from panderm.train.cae2 import CAEv2Pretrainer
    from panderm.train.masking import BlockMaskGenerator
    from panderm.train.teachers import RandomTeacher
    import numpy as np

    torch.manual_seed(0)
    model = CAEv2Pretrainer(create_encoder("panderm_test_patch16_224"), RandomTeacher(out_dim=16),
                            num_masked=98, regressor_depth=2, init_values=0.1)
    gen = BlockMaskGenerator(grid=14, num_masked=98)
    rng = np.random.default_rng(0)
    batch = {"student": torch.randn(2, 3, 224, 224), "teacher": torch.randn(2, 3, 224, 224),
             "mask": torch.as_tensor(np.stack([gen(rng) for _ in range(2)]))}

    def run(mode):
        os.environ["PANDERM_KERNELS"] = mode
        panderm_kernels.env_mode.cache_clear()
        for m in model.modules():
            m.__dict__.pop("_panderm_kernel_backend", None)
        model.zero_grad()
        out = model(batch)
        out["loss"].backward()
        used = sorted({str(v) for m in model.modules() for v in m.__dict__.get("_panderm_kernel_backend", {}).values()})
        grads = torch.cat([p.grad.flatten() for p in model.trainable_parameters() if p.grad is not None])
        return float(out["loss"]), grads, used

    l_t, g_t, used_t = run("torch")
    l_x, g_x, used_x = run("triton")
    print(json.dumps({"torch": l_t, "triton": l_x, "used_torch": used_t, "used_triton": used_x,
                      "grad_diff": float((g_t - g_x).abs().max()), "grad_scale": float(g_t.abs().max())}))
""")


def test_cae2_loss_and_grads_match_across_backends():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("PANDERM_KERNELS", None)
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["used_torch"] == ["torch"] and out["used_triton"] == ["triton"]
    assert abs(out["torch"] - out["triton"]) < 1e-5
    assert out["grad_diff"] < 1e-4 * max(1.0, out["grad_scale"])
