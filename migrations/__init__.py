"""The Alembic script directory of the OPUS database, installed as `opus.migrations`.

`opus.store.migrate` runs it (`opus db upgrade`); there is no alembic.ini. A schema change
is a new revision in versions/, written by hand as explicit operations (never importing
the live tables, which keep changing after it), and `tests/test_migrations.py` fails
until the tables and the revisions agree. A revision's skeleton::

    from alembic import command
    from opus.store.migrate import alembic_config
    command.revision(alembic_config(), "what changes", rev_id="0003")
"""
