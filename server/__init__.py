"""The HTTP process: serves ingest's POST and api's GET on one port and owns their connections."""
