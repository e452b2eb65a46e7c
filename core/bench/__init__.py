"""``python -m core.bench``: batched decoding measured against what a user would do instead.

Every figure is measured side by side in one run (the machines this runs on are shared and
noisy), so ratios are more telling than absolute numbers. See ``docs/BENCHMARKS.md``.
"""
