"""Ports: the protocols core services depend on (store, clock)."""
