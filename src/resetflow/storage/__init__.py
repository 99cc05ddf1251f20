"""Persistence: SQL tables and repositories (SQLite or PostgreSQL) and the session stores."""
