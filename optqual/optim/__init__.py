"""The `optimizer` config group: optimizers built from the model (parameter groups), SAM and Muon."""
