"""The Redis Lua scripts of the projections, one file each, read from the installed package."""

from __future__ import annotations

from importlib.resources import files

CELL_SCRIPTS = ("apply", "evict", "thaw", "restore", "swap_hour", "rebuild_day")
"""The scripts that write cells: each runs behind the cell header's prelude (cells.lua)."""


PRELUDES = {"apply": ("cells", "users", "axes")}
"""Scripts behind more than the cell header's prelude: the apply also adds users and admits values."""


def source(name: str) -> str:
    """The text of `<name>.lua` in this folder, behind its preludes (cells.lua when it writes cells)."""
    folder = files(__name__)
    preludes = PRELUDES.get(name, ("cells",) if name in CELL_SCRIPTS else ())
    return "".join(folder.joinpath(f"{part}.lua").read_text() for part in (*preludes, name))
