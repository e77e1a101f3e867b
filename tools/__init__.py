"""Benchmarks and other tools: they may import anything; nothing imports them."""
