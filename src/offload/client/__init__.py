"""Clients: one protocol, a local implementation (direct to the store) and, later, HTTP."""
