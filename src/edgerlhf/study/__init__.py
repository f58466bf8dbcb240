"""The precision study: the whole pipeline as one command, stage reuse, and the report."""
