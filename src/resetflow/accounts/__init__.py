"""Accounts: users, contacts, passwords and sessions."""
