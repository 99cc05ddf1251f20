"""resetflow's ``/send-token`` against the forgot-password endpoints of Django and
fastapi-users (issue 15; ``make bench-peers``, docs/performance.md "Peers").

The peers are installed from PyPI into their own virtual environments under
``.bench-peers/`` at run time (:mod:`bench.peers.envs`); what runs in them is our own
small code: :mod:`bench.peers.django_peer` (``PasswordResetView`` under gunicorn) and
:mod:`bench.peers.fastapi_users_peer` (fastapi-users' ``/auth/forgot-password`` under
uvicorn). :mod:`bench.peers.bare_fastapi` is a FastAPI app with only ``/healthz``, run in
resetflow's own environment with ``resetflow serve``'s uvicorn settings. The harness is
:mod:`bench.peers.harness` (``python -m bench.peers``).
"""
