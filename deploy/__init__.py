"""Running Hourglass's processes: local servers, the `./just up` supervisor, compose and cluster files."""
