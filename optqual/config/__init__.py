"""The run config: its schema assembled from the registry, every value check, comparison and upgrade of saved configs."""
