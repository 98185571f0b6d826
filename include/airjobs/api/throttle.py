"""Login throttling for ``POST /token`` (password grant), in process (the api-server runs one worker).

Failed logins are counted in a sliding window (60 s) per (user name, client address) and per client address:

* at most ``per_user`` (5) failures of one user name from one address: further attempts of that name from that
  address are refused (429, ``Retry-After``) until the oldest failure leaves the window, even with the right
  password. The same name from another address is not locked out (a guesser cannot lock a user out).
* at most ``per_address`` (20) failures from one address across all user names (password spraying): every
  login from that address is refused until the window frees up.

A successful login clears its (user name, address) count, not the address's count (knowing one password
must not let a sprayer go on). Refused attempts are not counted as failures. User names are compared
case-insensitively (FAB's ``find_user`` is, by default). Memory stays bounded: expired entries are swept,
and at most ``max_keys`` keys are kept (the oldest go first).

The client address is the connection's peer; ``X-Forwarded-For`` is used only when ``AIRJOBS_TRUST_PROXY=1``,
and then its last entry (the one the proxy in front of the service added; earlier ones are the client's word).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def client_address(peer: str | None, forwarded_for: str | None = None, trust_proxy: bool | None = None) -> str:
    """The address to throttle a request by (see the module docstring)."""
    if trust_proxy is None:
        trust_proxy = os.environ.get("AIRJOBS_TRUST_PROXY", "").strip().lower() in ("1", "true", "yes", "on")
    if trust_proxy and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        if last:
            return last
    return peer or "unknown"


class LoginThrottle:
    def __init__(
        self,
        per_user: int = MAX_FAILURES_PER_USER,
        per_address: int = MAX_FAILURES_PER_ADDRESS,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ):
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[tuple[str, ...], deque[float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    @classmethod
    def from_env(cls) -> LoginThrottle:
        return cls(
            per_user=_env_int("AIRJOBS_LOGIN_MAX_FAILURES", MAX_FAILURES_PER_USER),
            per_address=_env_int("AIRJOBS_LOGIN_MAX_FAILURES_PER_ADDRESS", MAX_FAILURES_PER_ADDRESS),
        )

    @staticmethod
    def _user_key(user: str, address: str) -> tuple[str, ...]:
        return ("user", user.casefold(), address)

    @staticmethod
    def _address_key(address: str) -> tuple[str, ...]:
        return ("address", address)

    def _recent(self, key: tuple[str, ...], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _wait(self, key: tuple[str, ...], limit: int, now: float) -> float:
        times = self._recent(key, now)
        if times is None or len(times) < limit:
            return 0.0
        # allowed again once only limit - 1 failures are left in the window
        return times[len(times) - limit] + self.window - now

    def retry_after(self, user: str, address: str) -> int | None:
        """Seconds to wait before ``user`` may try again from ``address``; None when the attempt may go ahead."""
        with self._lock:
            now = self.clock()
            wait = max(
                self._wait(self._user_key(user, address), self.per_user, now),
                self._wait(self._address_key(address), self.per_address, now),
            )
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failure(self, user: str, address: str) -> None:
        with self._lock:
            now = self.clock()
            self._sweep(now)
            for key in (self._user_key(user, address), self._address_key(address)):
                times = self._recent(key, now)
                if times is None:
                    times = self._failures[key] = deque()
                times.append(now)
                if len(times) > max(self.per_user, self.per_address):  # older ones no longer matter
                    times.popleft()
            while len(self._failures) > self.max_keys:  # full of live keys: forget the oldest
                del self._failures[next(iter(self._failures))]

    def success(self, user: str, address: str) -> None:
        with self._lock:
            self._failures.pop(self._user_key(user, address), None)

    def __len__(self) -> int:
        return len(self._failures)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep >= self.window or len(self._failures) >= self.max_keys:
            self._last_sweep = now
            for key in list(self._failures):
                self._recent(key, now)
