"""End-to-end fine-tuning with the official PanDerm recipe (docs/reference/finetuning.md); see ``docs/finetune.md``."""

from panderm.finetune.run import FinetuneResult, evaluate_run, finetune

__all__ = ["FinetuneResult", "evaluate_run", "finetune"]
