"""Ingest: find recordings (a folder or a manifest), check their audio, register them as calls."""
