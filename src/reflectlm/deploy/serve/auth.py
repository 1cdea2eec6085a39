"""API keys: several named keys, stored as SHA-256 hashes, compared in constant time, re-read
when their file changes (rotation without a restart), each with its own rate limit.

Key file (TOML; `reflectlm keys add NAME --file F` writes it and prints the key once):

    [keys.alice]
    sha256 = "9f86d0..."
    [keys.old-batch-job]
    sha256 = "..."
    revoked = true

or the environment: REFLECTLM_API_KEYS="alice:KEY,bob:KEY2" (hashed when read).

SHA-256 without a salt is enough here: the keys are 32 random bytes, so there is nothing for a
dictionary or a slow hash to protect; a password would need scrypt or argon2.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ...atomic import write_text
from ...config import ConfigError

ENV = "REFLECTLM_API_KEYS"


class AuthError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return "rlm_" + secrets.token_urlsafe(32)


@dataclass
class _Entry:
    name: str
    sha256: str
    revoked: bool = False


class KeyRing:
    """Named hashed keys from a file and / or the environment; the file is re-checked at most
    once a second and re-read when its modification time or size changes."""

    def __init__(self, path: str | Path | None = None, env: str | None = None):
        self.path = Path(path) if path else None
        self._env_entries = self._parse_env(os.environ.get(ENV, "") if env is None else env)  # hashed: no key is kept
        self._lock = threading.Lock()
        self._stamp = None
        self._checked = 0.0
        self._entries: list[_Entry] = []
        self._load()

    def __getstate__(self) -> dict:
        # Pickled to Ray Serve replicas (hashes only): they need no REFLECTLM_API_KEYS of their own.
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @staticmethod
    def _parse_env(env: str) -> list[_Entry]:
        entries = []
        for item in filter(None, (s.strip() for s in env.split(","))):
            name, sep, key = item.partition(":")
            if not sep or not name or not key:
                raise ConfigError(f"{ENV} must look like 'name:key,name2:key2'; got an item without 'name:'")
            entries.append(_Entry(name, digest(key)))
        return entries

    def _load(self) -> None:
        entries = list(self._env_entries)
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"API key file {self.path} does not exist; create it with "
                                        f"`reflectlm keys add NAME --file {self.path}`")
            stat = self.path.stat()
            self._stamp = (stat.st_mtime_ns, stat.st_size)
            tree = tomllib.loads(self.path.read_text(encoding="utf-8"))
            for name, v in (tree.get("keys") or {}).items():
                if not isinstance(v, dict) or not isinstance(v.get("sha256"), str) or len(v["sha256"]) != 64:
                    raise ConfigError(f"{self.path}: [keys.{name}] needs sha256 = \"<64 hex digits>\"")
                entries.append(_Entry(name, v["sha256"].lower(), bool(v.get("revoked", False))))
        self._entries = entries

    def _refresh(self) -> None:
        if self.path is None or time.monotonic() - self._checked < 1.0:
            return
        self._checked = time.monotonic()
        try:
            stat = self.path.stat()
        except OSError:
            return  # a file being replaced (or not on this Ray node): keep the keys we have
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            try:
                self._load()
            except (ValueError, OSError, tomllib.TOMLDecodeError):
                pass  # a half-written file: keep the previous keys, read it again next second

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return [e.name for e in self._entries if not e.revoked]

    def verify(self, presented: str | None) -> str:
        """The key's name, or AuthError (missing_key, invalid_key, revoked_key)."""
        if not presented:
            raise AuthError("missing_key", "an API key is required: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        with self._lock:
            self._refresh()
            entries = list(self._entries)
        d = digest(presented)
        match = None
        for e in entries:  # every entry is compared: the time taken does not depend on which one matches
            if hmac.compare_digest(d, e.sha256) and match is None:
                match = e
        if match is None:
            raise AuthError("invalid_key", "the API key is not valid")
        if match.revoked:
            raise AuthError("revoked_key", f"the API key {match.name!r} has been revoked; ask for a new one")
        return match.name


def add_key(path: str | Path, name: str) -> str:
    """Add (or rotate) a named key in a key file; returns the new key (shown once, stored hashed)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ConfigError(f"key name {name!r}: use letters, digits, '-' and '_' (at most 64)")
    path = Path(path)
    tree = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    keys = dict(tree.get("keys") or {})
    key = new_key()
    keys[name] = {"sha256": digest(key)}
    _write_keys(path, keys)
    return key


def revoke_key(path: str | Path, name: str) -> None:
    path = Path(path)
    keys = dict((tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}).get("keys") or {})
    if name not in keys:
        raise ConfigError(f"{path} has no key named {name!r}; its keys: {', '.join(keys) or '(none)'}")
    keys[name] = {**keys[name], "revoked": True}
    _write_keys(path, keys)


def _write_keys(path: Path, keys: dict) -> None:
    lines = ["# API keys for `reflectlm serve` (SHA-256 of each key; the keys themselves are not stored)", ""]
    for name, v in keys.items():
        lines += [f"[keys.{name}]", f'sha256 = "{v["sha256"]}"'] + (["revoked = true"] if v.get("revoked") else []) + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines), mode=0o600)  # atomic: the server never reads half a file


class RateLimiter:
    """Token bucket per key: `burst` requests at once, refilled at per_minute / 60 per second."""

    def __init__(self, per_minute: float, burst: int):
        self.rate, self.burst = per_minute / 60.0, float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed, else the seconds to wait before the next request would be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
