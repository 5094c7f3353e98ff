"""The engine: the training loop, the components at its points, the training state and the checkpoint."""
