"""Inference on a trained run: the predictor, evaluation metrics and per-token explanations."""
