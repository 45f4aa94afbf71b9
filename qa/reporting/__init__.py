"""Parts of :mod:`qa.export`: record queries, format writers and the manifest."""
