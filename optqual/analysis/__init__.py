"""How the solutions of finished runs differ: `analyze` and `compare`, the measures, a sweep's comparison."""
