"""The `data` group: datasets read once into uint8 tensors on the training device.

sources.py reads each option's files (torchvision's datasets, or an npz) and holds the
`_target_`s of conf/data/*.yaml; images.py splits, places and serves them as batches.
"""
