"""Benchmarks run by `mio-agent bench`: ratios measured side by side in one run."""
