"""What each request leaves behind: the usage-log line and the metrics."""
