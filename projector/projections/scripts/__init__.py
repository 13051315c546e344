"""The Redis Lua scripts of the projections, one file each, read from the installed package."""

from __future__ import annotations

from importlib.resources import files

CELL_SCRIPTS = ("apply", "evict", "thaw", "restore", "swap_hour", "rebuild_day")
"""The scripts that write cells: each runs behind the cell header's prelude (cells.lua)."""


def source(name: str) -> str:
    """The text of `<name>.lua` in this folder, behind the prelude when it writes cells."""
    text = files(__name__).joinpath(f"{name}.lua").read_text()
    if name in CELL_SCRIPTS:
        return files(__name__).joinpath("cells.lua").read_text() + text
    return text
