"""The MCP server (PRODUCT.md §7.4): tools, resources and a prompt over any ``AsyncClient``.

``offload mcp`` (or ``python -m offload.mcp``) serves it on stdio; the API mounts it at
``/mcp`` with :func:`offload.mcp.http.mount_http`. Importing this package loads nothing
heavy: use :mod:`offload.mcp.server`, :mod:`offload.mcp.stdio` or :mod:`offload.mcp.http`.
"""
