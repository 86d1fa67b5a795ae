"""Persistence: the SQLite ledger, the generation log, migrations and the image file store."""
