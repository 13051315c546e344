"""The live projector: a process balancing partition leases, and a worker for each partition it holds."""
