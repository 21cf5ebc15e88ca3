"""The wire API at the edge: Chat Completions requests in, completions, SSE and errors out."""
