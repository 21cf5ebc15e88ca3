"""What the proxy records: one exchange per request, with the metrics and logs around it."""
