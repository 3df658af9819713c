"""Where a model runs: images, registries, the executor seam and its local Docker implementation.

Nothing here imports pytest: the top level alone wires these into hooks and fixtures.
"""
