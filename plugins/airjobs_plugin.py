"""The airjobs AirflowPlugin: serves the Agave REST facade at its own paths on the api-server.

Airflow 3 serves Flask/FAB plugin views only under /pluginsv2 through a WSGI bridge, so the facade is a
FastAPI app. A mount at /jobs/v2 would not receive the exact path /jobs/v2 (the UI catch-all answers it),
so a root middleware hands every request under /jobs/v2, /notifications/v2, /apps/v2, /systems/v2, and /token and
/revoke, to the
app, through the request limits middleware.
"""

from __future__ import annotations

import logging

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

PREFIXES = ("/jobs/v2", "/notifications/v2", "/apps/v2", "/systems/v2")
EXACT = ("/token", "/token/", "/revoke", "/revoke/")

_facade = None


def facade():
    """The facade behind the request limits (airjobs.api.limits: body size and stall, path and query)."""
    global _facade
    if _facade is None:
        from airjobs.api.app import create_app
        from airjobs.api.limits import RequestLimits
        from airjobs_airflow.backend import AirflowBackend

        _facade = RequestLimits(create_app(AirflowBackend()))
    return _facade


def _ours(path: str) -> bool:
    return path in EXACT or any(path == p or path.startswith(p + "/") for p in PREFIXES)


class AgaveRoutes:
    """Pure ASGI middleware: Agave paths go to the facade, everything else to Airflow."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _ours(scope.get("path", "")):
            await facade()(scope, receive, send)
            return
        await self.app(scope, receive, send)


class AirjobsPlugin(AirflowPlugin):
    name = "airjobs"
    fastapi_root_middlewares = [{"middleware": AgaveRoutes, "name": "airjobs Agave v2 facade"}]

    # A route-less app, mounted only because Airflow runs the lifespan of every FastAPI app a plugin mounts:
    # its lifespan starts the reconciler in the api-server (airjobs_airflow.reconcile: a job never stays
    # active after an administrator ended its lifecycle run in Airflow).
    from airjobs_airflow import reconcile as _reconcile

    fastapi_apps = [{"app": _reconcile.app(), "url_prefix": "/airjobs-reconciler", "name": "airjobs reconciler"}]
