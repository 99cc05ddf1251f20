"""The HTTP edge: pages, actions (JSON and HTML forms), sessions and security headers."""
