"""The ``offload`` command line (Typer + Rich); one module per command group.

Commands go through :class:`offload.Client` only, never the store.
"""
