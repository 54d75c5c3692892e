"""Reliability under faults: resuming after a kill, one run per output directory, deterministic training."""
