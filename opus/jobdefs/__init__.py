"""Job definitions: ActivityDescription files, their registry and parameter checking."""
