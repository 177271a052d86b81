"""The REST API of the switch: every resource of the account, behind one guard.

Auth, errors and paging are switch/rest.py's; the resources are
switch/api_recordings.py (Recordings) and switch/api_calls.py (Calls).
"""

from __future__ import annotations

from aiohttp import web

from switch.api_calls import CallsResource, add_calls_routes
from switch.api_recordings import add_recordings_routes
from switch.config import Config
from switch.rest import AccountGuard
from switch.store import Store
from switch.workers import WorkerPool


def add_api_routes(
    app: web.Application,
    store: Store,
    config: Config,
    workers: WorkerPool | None = None,
    calls: CallsResource | None = None,
) -> None:
    """Serve the account's Recordings, and its Calls when the call side is running."""
    guarded = AccountGuard(config.account.sid, config.account.auth_token)
    add_recordings_routes(app, guarded, store, config, workers)
    if calls is not None:
        add_calls_routes(app, guarded, calls)
