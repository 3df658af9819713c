"""The zoo: models.json entries, their Dockerfiles, tag selection and madengine's run context.

Nothing here imports pytest: the top level alone wires these into hooks and fixtures.
"""
