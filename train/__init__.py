"""Training: corpora, label sets, speaker-independent splits, datasets, the training loop."""
