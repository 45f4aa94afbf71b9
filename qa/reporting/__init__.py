"""Exports and reports for auditors and managers: the audit export (:mod:`.export`) with its
record queries (:mod:`.records`), format writers (:mod:`.writers`) and manifest
(:mod:`.manifest`); the HTML report (:mod:`.report`) with its charts (:mod:`.charts`)."""
