"""Local stand-ins for the third-party APIs resetflow talks to, served on loopback.

Each one speaks its vendor's real wire format and checks every request against the
vendor's published description, so that a test passing here means the request would
have the right shape at the real service too.
"""
