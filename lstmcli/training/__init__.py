"""Training: the model-agnostic trainer, its gradient monitor and the assembly of a run."""
