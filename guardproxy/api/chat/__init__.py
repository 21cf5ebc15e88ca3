"""OpenAI Chat Completions: `decode.py` validates a request and pulls out what is judged,
`codec.py` encodes answers, streams and blocks, `masking.py` redacts answers and streams."""
