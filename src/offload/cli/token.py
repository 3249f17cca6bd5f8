"""``offload token create|list|revoke``: API tokens (PRODUCT.md §9).

Against the local database by default (that is how the first admin token is made);
against a server when ``$OFFLOAD_URL`` is set (needs an admin ``$OFFLOAD_TOKEN``).
A new token's secret is printed once, on stdout alone, and stored only as a hash.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Protocol, TypeVar

import typer

from offload.cli.common import (
    DATABASE_URL_ENV,
    DatabaseUrl,
    JsonOut,
    dump,
    human_age,
    print_json,
    stderr,
    stdout,
    table,
)

if TYPE_CHECKING:
    from offload.domain.models import NewToken, Role, TokenInfo

T = TypeVar("T")

app = typer.Typer(
    help="API tokens: create (shown once, stored hashed), list, revoke.", no_args_is_help=True
)


class _TokenAdmin(Protocol):
    async def create_token(
        self, user: str, role: Role | str = ..., name: str | None = None
    ) -> NewToken: ...

    async def list_tokens(self) -> list[TokenInfo]: ...

    async def revoke_token(self, token_id: str) -> TokenInfo: ...


def _server_url(database_url: str | None) -> str | None:
    # Same rule as every other command: an explicit --database-url beats $OFFLOAD_URL.
    if database_url and database_url != os.environ.get(DATABASE_URL_ENV):
        return None
    return os.environ.get("OFFLOAD_URL") or None


def _run(action: Callable[[_TokenAdmin], Awaitable[T]], database_url: str | None) -> T:
    import asyncio

    async def go() -> T:
        url = _server_url(database_url)
        if url:
            from offload.client.http import HttpClient

            client = HttpClient(url, token=os.environ.get("OFFLOAD_TOKEN") or None)
            try:
                return await action(client)
            finally:
                await client.close()
        from offload.client.factory import open_service
        from offload.core.auth import AuthService

        service = await open_service(database_url)
        try:
            return await action(AuthService(service.store, service.clock))
        finally:
            await service.store.close()

    return asyncio.run(go())


@app.command("create")
def create(
    user: Annotated[str, typer.Option("--user", "-u", help="Who the token acts as.")],
    role: Annotated[
        str,
        typer.Option(
            "--role", "-r", help="admin (everything), user (own tasks) or agent (claims work)."
        ),
    ] = "user",
    name: Annotated[
        str | None, typer.Option("--name", help="A label, e.g. the machine it is for.")
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token and print its secret once (only a hash is stored)."""
    new = _run(lambda admin: admin.create_token(user, role, name), database_url)
    if json_out:
        print_json(dump(new))
        return
    print(new.token, flush=True)
    stderr().print(
        f"token {new.info.id} for {new.info.user} (role {new.info.role.value}); shown once, "
        "keep it now. Use it as OFFLOAD_TOKEN=… or 'Authorization: Bearer …'.",
        markup=False,
        soft_wrap=True,
    )


@app.command("list")
def list_tokens(json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Every token (never the secrets)."""
    tokens = _run(lambda admin: admin.list_tokens(), database_url)
    if json_out:
        print_json(dump(tokens))
        return
    out = table(caption=f"{len(tokens)} tokens")
    for column in ("id", "user", "role", "name", "created", "last used", "revoked"):
        out.add_column(column, no_wrap=column == "id")
    for t in tokens:
        out.add_row(
            t.id, t.user, t.role.value, t.name or "-", human_age(t.created_at),
            human_age(t.last_used_at), "yes" if t.revoked else "",
        )  # fmt: skip
    stdout().print(out)


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (from `offload token list`).")],
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token: it stops working at once."""
    info = _run(lambda admin: admin.revoke_token(token_id), database_url)
    if json_out:
        print_json(dump(info))
        return
    print(f"revoked token {info.id} ({info.user}, {info.role.value})")
