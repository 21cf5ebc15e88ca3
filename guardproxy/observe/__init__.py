"""What the proxy records: one exchange per request, and the audit sink it is written to."""
