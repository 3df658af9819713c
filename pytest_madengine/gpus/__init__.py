"""GPUs: detection (model, probes, AMD and NVIDIA parsers), the pool, the cross-worker allocator, leases.

Nothing here imports pytest: the top level alone wires these into hooks and fixtures.
"""
