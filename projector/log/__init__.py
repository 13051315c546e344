"""The log side (NATS JetStream): consumers read and positioned, an hour's messages read whole, dead
letters, change notices, the stream's configuration, compaction."""
