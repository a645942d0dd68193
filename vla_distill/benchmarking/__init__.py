"""Latency, size, FLOP and memory measurements of policies."""
