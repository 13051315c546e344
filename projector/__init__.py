"""Folds the event log into hourly Redis projections, live and by replay."""
