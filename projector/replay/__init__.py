"""Replay: rebuild projections from the stream, whole (a new generation) or one hour, with build processes."""
