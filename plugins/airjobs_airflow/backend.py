"""The REST facade's Backend on Airflow: FAB users and roles, the api-server's own JWTs, trigger_dag.

Tokens: access tokens are Airflow's own JWTs (``sub`` = the FAB user id). The facade re-checks, at most
``USER_CHECK_SECONDS`` apart per user id, that the user still exists and is active (FAB's auth manager keeps
users ``[fab] cache_ttl`` seconds, 2 in airflow.cfg, 30 by default), and at most ``REVOCATION_CACHE_SECONDS``
apart per token that it was not revoked (Airflow's ``revoked_token`` table). Refresh tokens are HS512 JWTs of
this service bound to the user record (``uid``) with a ``jti``: refused when the account was deleted, re-created
(another id) or deactivated, and when revoked through ``POST /revoke`` (``airjobs_revoked_refresh_token``).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt

from airjobs.api.app import User
from airjobs.errors import AgaveError, Unauthorized
from airjobs.models import Job
from airjobs_airflow import LIFECYCLE_DAG_ID

REFRESH_TYPE = "airjobs-refresh"
REFRESH_LIFETIME = 14 * 24 * 3600
#: a token revoked through Airflow's logout is refused by the facade within this many seconds
REVOCATION_CACHE_SECONDS = 2.0
#: a deleted or deactivated user's access tokens are refused within this many seconds
USER_CHECK_SECONDS = 2.0


def _remembered(memo: dict[Any, float], key: Any, seconds: float, check: Any) -> bool:
    """``check()`` (a database query), a True answer remembered for ``seconds`` per key; a False one never."""
    now = time.monotonic()
    checked = memo.get(key)
    if checked is not None and now - checked < seconds:
        return True
    if not check():
        memo.pop(key, None)
        return False
    if len(memo) > 10_000:
        memo.clear()
    memo[key] = now
    return True


def _flask_app():
    from airflow.providers.fab.auth_manager.api_fastapi.routes.login import _get_flask_app

    return _get_flask_app()


def _conf():
    from airflow.configuration import conf

    return conf


class AirflowBackend:
    def __init__(self) -> None:
        from airflow.api_fastapi.app import get_auth_manager

        self._get_auth_manager = get_auth_manager
        self._revocation_checked: dict[str, float] = {}
        self._user_checked: dict[int, float] = {}

    @property
    def auth_manager(self):
        return self._get_auth_manager()

    # ------------------------------------------------------------ authentication

    async def authenticate(self, token: str) -> User:
        """Validate the token's signature in the event loop, then do the database part (the revocation
        check and loading the user, as ``get_user_from_token`` does) in a worker thread, so a slow query
        never blocks the api-server's event loop."""
        from anyio import to_thread
        from jwt import ExpiredSignatureError, InvalidTokenError

        try:
            claims = await self.auth_manager._get_token_validator().avalidated_claims(token)
        except ExpiredSignatureError:
            raise Unauthorized("Token expired. Log in again at /token.") from None
        except (InvalidTokenError, ValueError, KeyError):
            raise Unauthorized("Invalid bearer token.") from None
        if self._cached(claims):  # nothing to look up: no thread hop
            return self._user_from_claims(claims)
        return await to_thread.run_sync(self._user_from_claims, claims)

    def _cached(self, claims: dict[str, Any]) -> bool:
        """True when the revocation check, the user validity check and the user are all remembered (no
        database access needed)."""
        now = time.monotonic()
        jti = claims.get("jti")
        checked = self._revocation_checked.get(jti) if jti else None
        if jti and (checked is None or now - checked >= REVOCATION_CACHE_SECONDS):
            return False
        try:
            uid = int(claims["sub"])
            valid = self._user_checked.get(uid)
            return valid is not None and now - valid < USER_CHECK_SECONDS and uid in self.auth_manager.cache
        except (KeyError, ValueError, TypeError, AttributeError):
            return False

    def _user_valid(self, uid: int) -> bool:
        """Does the FAB user with this id exist and is it active? One query, remembered for USER_CHECK_SECONDS
        (FAB's own user cache keeps a user for ``[fab] cache_ttl`` seconds)."""
        from airflow.providers.fab.auth_manager.models import User as FabUser
        from airflow.utils.session import create_session
        from sqlalchemy import select

        def active() -> bool:
            with create_session() as session:
                row = session.execute(select(FabUser.id, FabUser.active).where(FabUser.id == uid)).first()
            if row is None or not row.active:  # deleted, or deactivated (a null counts as inactive, as FAB does)
                self.auth_manager.cache.pop(uid, None)
                return False
            return True

        return _remembered(self._user_checked, uid, USER_CHECK_SECONDS, active)

    def _not_revoked(self, jti: str) -> bool:
        """Airflow's revocation check (one query), remembered for REVOCATION_CACHE_SECONDS per token."""
        from airflow.models.revoked_token import RevokedToken

        return _remembered(
            self._revocation_checked, jti, REVOCATION_CACHE_SECONDS, lambda: not RevokedToken.is_revoked(jti)
        )

    def _user_from_claims(self, claims: dict[str, Any]) -> User:
        if (jti := claims.get("jti")) and not self._not_revoked(jti):
            raise Unauthorized("Invalid bearer token: it has been revoked.")
        try:
            if not self._user_valid(int(claims["sub"])):
                raise ValueError("unknown or inactive user")
            native = self.auth_manager.deserialize_user(claims)
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("Invalid bearer token: the user is unknown or inactive.") from None
        roles = {getattr(r, "name", str(r)) for r in (getattr(native, "roles", None) or [])}
        native.perms  # noqa: B018  (load the permission set now, in this thread, not in the event loop)
        return User(name=native.get_name(), is_admin="Admin" in roles, native=native)

    def _token_for(self, native: Any) -> dict[str, Any]:
        lifetime = _conf().getint("api_auth", "jwt_expiration_time")
        access = self.auth_manager.generate_jwt(user=native, expiration_time_in_seconds=lifetime)
        refresh = jwt.encode(
            {
                "sub": native.get_name(),
                "uid": native.id,
                "jti": uuid.uuid4().hex,
                "typ": REFRESH_TYPE,
                "exp": int(time.time()) + REFRESH_LIFETIME,
            },
            _conf().get("api_auth", "jwt_secret"),
            algorithm="HS512",
        )
        return {"access_token": access, "refresh_token": refresh, "expires_in": lifetime}

    def login(self, username: str, password: str) -> dict[str, Any]:
        with _flask_app().app_context():
            try:
                native = self.auth_manager.create_token(headers={}, body={"username": username, "password": password})
            except ValueError as e:
                raise Unauthorized(str(e)) from None
            if native is None:
                raise Unauthorized("Invalid user name or password.")
            return self._token_for(native)

    @staticmethod
    def _refresh_claims(token: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired refresh token of this service, else None."""
        try:
            claims = jwt.decode(token, _conf().get("api_auth", "jwt_secret"), algorithms=["HS512"])
        except jwt.PyJWTError:
            return None
        return claims if claims.get("typ") == REFRESH_TYPE else None

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        from airjobs import db
        from airjobs.models import RevokedRefreshToken

        claims = self._refresh_claims(refresh_token)
        if claims is None:
            raise Unauthorized("Invalid or expired refresh token.")
        if not claims.get("jti") or not isinstance(claims.get("uid"), int):
            raise Unauthorized("This refresh token was issued by an earlier release: log in again at /token.")
        with db.session() as s:
            if s.get(RevokedRefreshToken, claims["jti"]) is not None:
                raise Unauthorized("Invalid refresh token: it has been revoked.")
        with _flask_app().app_context():
            native = self.auth_manager.security_manager.find_user(username=claims.get("sub"))
            # a user deleted and created again under the same name is another account (another id)
            if native is None or not native.is_active or native.id != claims["uid"]:
                raise Unauthorized("The user of this refresh token is unknown or inactive.")
            return self._token_for(native)

    def revoke(self, token: str) -> None:
        """A refresh token: its jti goes to the project's ``airjobs_revoked_refresh_token`` until it would
        have expired. Anything else is handed to Airflow (``auth_manager.revoke_token``: an access token's jti
        goes to Airflow's ``revoked_token``, as at logout; an invalid token is ignored)."""
        from sqlalchemy import delete

        from airjobs import db
        from airjobs.models import RevokedRefreshToken

        try:
            jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return  # not a JWT at all: nothing to revoke
        claims = self._refresh_claims(token)
        if claims is None:
            self.auth_manager.revoke_token(token)
            return
        if not claims.get("jti"):
            return  # issued by an earlier release: refused by refresh() anyway
        now = datetime.now(UTC)
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        with db.transaction() as s:
            s.execute(delete(RevokedRefreshToken).where(RevokedRefreshToken.expires < now))  # expired anyway
            s.merge(RevokedRefreshToken(jti=claims["jti"], expires=expires))

    # ------------------------------------------------------------ authorization (D15)

    def authorize(self, user: User, method: str, resource: str) -> bool:
        return bool(
            self.auth_manager.is_authorized_custom_view(method=method, resource_name=resource, user=user.native)
        )

    # ------------------------------------------------------------ the lifecycle run

    def launch(self, job: Job) -> None:
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.exceptions import DagRunAlreadyExists
        from airflow.utils.types import DagRunTriggeredByType

        try:
            trigger_dag(
                LIFECYCLE_DAG_ID,
                run_id=job.id,
                conf={"job_id": job.id},
                triggered_by=DagRunTriggeredByType.REST_API,
                triggering_user_name=job.owner,
            )
        except DagRunAlreadyExists:  # the reconciler launched it first (this request was slow): it runs
            return
        except Exception as e:
            raise AgaveError(f"{type(e).__name__}: {e}", 500) from e

    # ------------------------------------------------------------ credentials

    def connection_extra(self, conn_id: str) -> dict | None:
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models.connection import Connection

        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            return None
        try:
            return conn.extra_dejson or {}
        except Exception:  # an unreadable extra grants nothing
            return {}

    def user_exists(self, username: str) -> str | None:
        with _flask_app().app_context():  # FAB may match names case-insensitively: answer its own spelling
            found = self.auth_manager.security_manager.find_user(username=username)
            return found.username if found is not None else None

    def delete_connection(self, conn_id: str) -> None:
        from airflow.models.connection import Connection
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        with create_session() as session:
            session.execute(delete(Connection).where(Connection.conn_id == conn_id))

    def put_connection(
        self, conn_id: str, conn_type: str, host: str, port: int, login: str | None, password: str | None, extra: dict
    ) -> None:
        import json

        from airflow.models.connection import Connection
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            conn = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
            if conn is None:
                conn = Connection(conn_id=conn_id)
                session.add(conn)
            conn.conn_type = conn_type
            conn.host = host
            conn.port = port
            conn.login = login
            conn.password = password
            conn.extra = json.dumps(extra) if extra else None
            conn.description = "created by airjobs from an Agave system description"
