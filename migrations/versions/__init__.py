"""The revisions, oldest first: 0001 the first release's tables, then one per change."""
