"""Anthropic Messages: `codec.py` decodes and encodes, `stream.py` reads and cuts off its
event streams, `shapes.py` holds the shapes both use."""
