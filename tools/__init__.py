"""Benchmarks and measurement tools: they may import anything; nothing imports them."""
