"""Provenance of activities as IVOA ProvDM / W3C PROV: record, store, query, serialize.

A standalone library: it imports nothing from the OPUS server, so any pipeline
can record its activities the same way.
"""
