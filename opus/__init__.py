"""OPUS: a provenance-first IVOA UWS 1.1 job server."""

__version__ = "0.1.0"
