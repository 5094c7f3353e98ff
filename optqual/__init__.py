"""optqual: deterministic CIFAR-10 ResNet runs for comparing what optimizers find."""
