"""Sampling: per-conversation settings, the native sampler chain, candidate pre-filters, and
what a sampled token was chosen from."""
