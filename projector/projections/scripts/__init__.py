"""The Redis Lua scripts of the projections, one file each, read from the installed package."""

from __future__ import annotations

from importlib.resources import files


def source(name: str) -> str:
    """The text of `<name>.lua` in this folder."""
    return files(__name__).joinpath(f"{name}.lua").read_text()
