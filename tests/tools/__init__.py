"""Tests of the tools: the bench-peers packets, load and figures."""
