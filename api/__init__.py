"""The read side: serves the hourly projections from Redis."""
