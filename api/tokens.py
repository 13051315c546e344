"""Read tokens: who may GET analytics when `ANALYTICS_READ_TOKENS` (or its file) is set."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path


class ReadTokens:
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens if t)

    @classmethod
    def from_settings(cls, inline: str, path: str) -> ReadTokens:
        """Comma-separated tokens, plus one per line of the file (blank lines and `#` comments skipped)."""
        tokens = [t.strip() for t in inline.split(",")]
        if path:
            lines = Path(path).read_text().splitlines()
            tokens += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return cls(t for t in tokens if t)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def allow(self, authorization: bytes | None) -> bool:
        """Whether an `Authorization` header carries one of the tokens. Every token is compared, each
        in constant time, so the time taken says nothing about which one came close."""
        if not self._tokens:
            return True
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return False
        offered = authorization[7:].strip()
        found = False
        for token in self._tokens:
            found |= hmac.compare_digest(offered, token)
        return found
