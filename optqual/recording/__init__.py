"""What a running run writes: its history, metrics, weights and split, and its dashboards."""
