"""Data: named datasets and local files, splits, the tokenizer and batching."""
