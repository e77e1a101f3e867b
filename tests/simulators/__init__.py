"""Tests of the device simulators, the gateway publisher and the benchmark."""
