"""Benchmarks and measurement tools: may import anything; nothing imports them."""
