"""Tenant policies: the typed model, loading and inheritance, what a policy means for one
request (profiles), what the guard is shown (`policy show`), and hot reload."""
