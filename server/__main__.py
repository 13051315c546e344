"""Runs the HTTP app on granian: `python -m server` (settings from ANALYTICS_* variables)."""

from __future__ import annotations

import logging

from granian import Granian
from granian.constants import Interfaces
from litestar import Litestar

from contract.settings import Settings


def app_from_env() -> Litestar:
    """Granian's factory: each worker process reads its settings and builds its own app."""
    from server.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return create_app(Settings.from_env())


def main() -> None:
    settings = Settings.from_env()
    Granian(
        "server.__main__:app_from_env",
        factory=True,
        address=settings.http_host,
        port=settings.http_port,
        interface=Interfaces.ASGI,
        workers=settings.http_workers,
        backlog=2048,
        respawn_failed_workers=True,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
