"""Serving HTTP: the accept loop, header timeouts, load shedding, worker processes."""
