"""The write side: validates POSTed events and appends them durably to the hour-partitioned stream."""
