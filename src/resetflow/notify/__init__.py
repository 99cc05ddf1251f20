"""The notification engine: templates, routing, providers, the outbox and its worker."""
