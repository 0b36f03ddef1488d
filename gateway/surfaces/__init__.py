"""Inbound APIs: each parses its caller's body into the gateway's request and renders answers,
stream events and errors in its caller's dialect. base.py is the protocol they share."""
