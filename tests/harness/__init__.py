"""Shared test harnesses: real services, real processes, real clients, and waiting."""
