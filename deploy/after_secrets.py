"""`python -m deploy.after_secrets CMD...`: waits until the compose stack's `secrets` service has written
the credentials, then becomes CMD. The stacks start in any order and restart any container on its own
(podman does not restart a container whose `depends_on` include a one-shot that has exited)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

SAY_EVERY_S = 5.0


def waiting_for(directory: Path, names: list[str]) -> list[str]:
    """The files of `names` not (yet, or not wholly) in `directory`: missing or empty."""
    out = []
    for name in names:
        path = directory / name
        try:
            if path.stat().st_size > 0:
                continue
        except OSError:
            pass
        out.append(str(path))
    return out


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m deploy.after_secrets COMMAND [ARG...]")
    directory = Path(os.environ.get("ANALYTICS_DATA_DIR", ".data")) / "secrets"
    names = os.environ.get("HOURGLASS_SECRETS", "nats.conf users.acl nats-admin.url redis-admin.url").split()
    said = 0.0
    while missing := waiting_for(directory, names):
        if time.monotonic() - said >= SAY_EVERY_S:
            print(f"waiting for {', '.join(missing)} (the secrets service writes them)", file=sys.stderr)
            said = time.monotonic()
        time.sleep(0.2)
    os.execvp(argv[0], argv)  # noqa: S606 (the command is the container's own, from the compose file)


if __name__ == "__main__":
    main(sys.argv[1:])
