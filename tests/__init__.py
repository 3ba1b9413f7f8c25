"""The OPUS test suite; shared helpers are in tests.servers."""
