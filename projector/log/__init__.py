"""The log side (NATS JetStream): consumers read and positioned, dead letters, change notices,
the stream's configuration, compaction."""
