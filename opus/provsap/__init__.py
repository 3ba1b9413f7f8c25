"""Provenance access: a job's provenance and ProvSAP, over the provenance/ library."""
