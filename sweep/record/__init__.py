"""A run's record, the truth of a sweep: its column and status names (schema.py), its tables and
manifest on disk (results.py), and the ledger that turns trial reports into rows by its rules."""
