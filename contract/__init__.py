"""The contract shared by ingest, projector and api: wire schema, subjects, hours, key layout, settings."""
