"""Benchmarks: throughput, latency and soak runs of the models and the streamer (each states its machine)."""
