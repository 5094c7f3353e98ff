"""Tools over finished runs and sweeps: summaries, curves, statistics, diff, resume, profile."""
