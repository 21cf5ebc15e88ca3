"""The wire APIs at the edge, one package each (`chat`, `responses`, `messages`): a codec decodes
the client's bytes into the pipeline's `Conversation` and encodes its outcomes back. `wire.py`
lists them; `fields.py` and `answers.py` are their request and answer tables."""
