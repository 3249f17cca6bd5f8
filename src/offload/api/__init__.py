"""The HTTP API (FastAPI): REST v1, the worker protocol, live events, auth and metrics.

:func:`offload.api.app.create_app` builds the app over a :class:`QueueService`;
:mod:`offload.api.server` runs it under uvicorn (``offload serve``). Every route is a thin
adapter over the service: no SQL and no queue rules here.
"""

from offload.api.app import create_app
from offload.api.config import ApiSettings

__all__ = ["ApiSettings", "create_app"]
