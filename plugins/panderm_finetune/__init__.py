"""Built-in plugin: finetune (placeholder until its commands land)."""
