"""What crosses process boundaries: the wire schema, subjects and hours, the Redis key and cell layout."""
