"""The key broker service: Trustee's RCAR protocol over HTTP, appraisal, secrets, audit.

``storage`` (SQLAlchemy: SQLite by default, PostgreSQL by URL), ``broker`` (the protocol's
logic, no HTTP), ``app`` (FastAPI: routes, RFC 7807 problems, size limits), ``client`` (the
guest side).
"""
