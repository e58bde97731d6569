"""Models: loading HF causal LMs, the critic's value head, tiny models for tests and benchmarks."""
