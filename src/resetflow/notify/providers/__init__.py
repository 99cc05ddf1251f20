"""Delivery providers: the port in ``base``, one adapter per module."""
