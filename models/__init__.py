"""Shared foundation of emostream: log-mel features, model architectures and the model-file contract."""
