"""EdgeRLHF."""
