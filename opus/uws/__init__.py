"""UWS 1.1: routes (HTTP only) -> service (rules, phases) -> store."""
