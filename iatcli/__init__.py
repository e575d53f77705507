"""The ``iat`` command line: the top of the import graph (it may import pipelines, steps and the core)."""
