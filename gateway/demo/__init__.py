"""The demo and its mock providers: not production code."""
