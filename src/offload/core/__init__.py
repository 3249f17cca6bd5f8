"""Core services: the queue service and the task-type registry. No adapters, no SQL."""
