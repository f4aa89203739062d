"""Read-model queries: get, list, filter, paginate. Every GET is answered here."""
