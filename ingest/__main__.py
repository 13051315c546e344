"""Command line of the write side: `import FILE...` (./just import), through a running HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from deploy.settings import Settings, SettingsError
from ingest.importer import import_files


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="send NDJSON or CSV files (.gz too) through POST /analytics/batch")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--url", help="the HTTP server (default: ANALYTICS_HTTP_HOST and ANALYTICS_HTTP_PORT)")
    args = parser.parse_args()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration: {exc}", file=sys.stderr)
        return 2
    url = args.url or settings.http_url
    try:
        return asyncio.run(import_files(url, args.files))
    except KeyboardInterrupt:
        print("\nimport: stopped; run it again to finish (nothing is counted twice)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
