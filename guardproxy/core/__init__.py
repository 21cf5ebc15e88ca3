"""The vocabulary every layer shares: it imports nothing of guardproxy but `errors`."""
