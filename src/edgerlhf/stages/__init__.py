"""Pipeline stages; each exposes run(cfg) -> run folder."""
