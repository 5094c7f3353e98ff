"""The pruning study, kept apart as a study: sparsity penalties whose weight follows a schedule
(regularizer.py, regularizer_schedule.py), the CoDeQ dead-zone quantizer (quantizer.py), and the
report of what the network would cost after pruning, with its pictures (report.py, pictures.py).
Each is a component (optqual/components/registry.py)."""
