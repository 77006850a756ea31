"""Throughput and memory benchmark: the connector's `read` against a minimal Python loop (`python -m bench`)."""
