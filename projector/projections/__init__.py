"""The Redis side: the projection store and its Lua scripts, the hot window, snapshots, partition leases."""
