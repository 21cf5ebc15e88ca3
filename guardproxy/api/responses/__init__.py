"""The OpenAI Responses API: `codec.py` decodes and encodes, `stream.py` reads and cuts off its
semantic-event streams, `shapes.py` holds the shapes both use."""
