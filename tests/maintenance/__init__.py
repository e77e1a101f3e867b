"""Tests of the maintenance process: roll-up folding, availability, retention."""
