"""Training: the DDP trainer, objectives, teachers and pretraining data."""
