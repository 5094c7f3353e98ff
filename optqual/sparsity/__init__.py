"""The pruning study: sparsity penalties whose weight follows a schedule (penalties.py), the
CoDeQ dead-zone quantizer (quantizer.py), and the report of what the network would cost after
pruning, with its pictures (report.py, pictures.py); layers.py says which layers each one sees."""
