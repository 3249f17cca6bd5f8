"""The worker: claims tasks, runs their handlers, reports each attempt's outcome.

``offload.Worker`` (:class:`offload.worker.runtime.Worker`) is the entry point;
``python -m offload.worker`` runs one without the CLI.
"""

from offload.worker.runtime import Worker, load_imports

__all__ = ["Worker", "load_imports"]
