"""`create_app`: the Litestar app (behind its raw front), built complete from one `Services`."""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import ASGIApp

from contract.hours import system_now_ms
from deploy.settings import Settings
from server.fast import FastFront
from server.link import Clients
from server.routes import HANDLERS
from server.services import Services

__all__ = ["Clients", "create_app"]


def create_app(
    settings: Settings,
    clients: Clients | None = None,
    clock: Callable[[], int] = system_now_ms,
) -> ASGIApp:
    """The app; `clients` (tests) replace connections it would make, and stay the caller's."""
    services = Services.build(settings, clients, clock)
    app = Litestar(
        route_handlers=HANDLERS,
        dependencies={"services": Provide(services.provide, use_cache=True, sync_to_thread=False)},
        lifespan=[services.lifespan],
        exception_handlers={Exception: services.errors.handler},
        openapi_config=OpenAPIConfig(
            title="Hourglass",
            version="1",
            description="Counts ad clicks, impressions and unique users per UTC hour.",
            path="/schema",
            # The document itself, as JSON, at /schema and /schema/openapi.json: no UI that loads from a CDN.
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"])],
        ),
        debug=False,
    )
    if not settings.http_fast_path:
        return app
    return FastFront(app, services)
