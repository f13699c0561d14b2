"""Backups: the catalog of a source, streaming verifiers, offsite parity. No pytest in here."""
