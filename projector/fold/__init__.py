"""The pure fold: event rules, the digest of fetched messages into deltas, and the delta values."""
