"""The maintenance process: roll-up folding, availability and retention."""
