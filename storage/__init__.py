"""The storage layer: the only package that runs SQL (journal, jobs, studies, outbox, nodes).

One interface, two engines through SQLAlchemy Core: a SQLite file (the
embedded default) or a PostgreSQL database shared by several nodes (issue 22).
"""
