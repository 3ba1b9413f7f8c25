"""SQLAlchemy 2 tables and database access for jobs, parameters and stored entities."""
