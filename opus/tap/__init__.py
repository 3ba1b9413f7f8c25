"""TAP 1.1 over the provenance store: ADQL, TAP_SCHEMA, VOSI, uploads, results."""
