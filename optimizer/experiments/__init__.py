"""Experiments: storing them, aggregating their conversations, deciding, monitoring."""
