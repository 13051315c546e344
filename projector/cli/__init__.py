"""The command line's pieces: reaching the servers in bounded time, and the inspect view."""
