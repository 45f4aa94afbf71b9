"""The batch pipeline: the stages over many calls on the local or the Ray executor, the record
of each run and its progress."""
