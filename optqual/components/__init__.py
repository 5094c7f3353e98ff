"""Everything that takes part in training, one module per component, each registered with what it
declares (registry.py) and called at the points of training it overrides (extension.py)."""
