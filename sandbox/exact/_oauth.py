"""OAuth 2 of the simulated Exact Online: consent chains, one-time refresh tokens, minimum token age.

Each consent starts a *chain*: the authorization code (or a seeded consent) yields a pair, and every
refresh replaces both tokens of the chain. Only the newest refresh token of a chain is valid, as on
Exact since 2018, so a worker that refreshes with a token another worker already used is refused, and
a chain whose newest token was lost is dead until a human consents again. A refresh within
`min_token_age` seconds of the last issuance is refused with the error Exact returns since July 2021,
and the old pair stays valid.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["Chain", "OAuthError", "OAuthServer"]

REFRESH_LIFETIME = 30 * 86_400


class OAuthError(Exception):
    """A token-endpoint refusal in RFC 6749 shape: `{"error": ..., "error_description": ...}`."""

    def __init__(self, status: int, error: str, description: str, *, reason: str | None = None):
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description, self.reason = status, error, description, reason

    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description}


@dataclass
class Chain:
    """One consent: the user's grant to a client for some divisions, and its current token pair."""

    chain_id: str
    client_id: str
    divisions: list[int]
    refresh_token: str
    issued_at: float
    refresh_expires_at: float
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    revoked: bool = False
    used_refresh_tokens: list[str] = field(default_factory=list)


def _exact_time(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return f"{dt.month}/{dt.day}/{dt.year} {dt.strftime('%I:%M:%S %p').lstrip('0')}"


class OAuthServer:
    """Clients, authorization codes and chains; `stats` counts what reached the token endpoint."""

    def __init__(
        self,
        clients: dict[str, dict],
        *,
        access_ttl: float = 600.0,
        min_token_age: float = 570.0,
        code_ttl: float = 180.0,
        reuse_error: str = "invalid_grant",
    ):
        self.clients = clients  # client_id -> {"secret", "redirect_uri"}
        self.access_ttl = access_ttl
        self.min_token_age = min_token_age
        self.code_ttl = code_ttl
        self.reuse_error = reuse_error
        self.chains: dict[str, Chain] = {}
        self.codes: dict[str, tuple[str, str, list[int], float]] = {}  # code -> client, redirect, divs, exp
        self.stats = {"authorization_code": 0, "refresh_ok": 0, "refresh_failed": 0, "refused_too_early": 0}

    # ---- persistence ----------------------------------------------------------------------------

    def as_json(self) -> dict:
        return {cid: c.__dict__ for cid, c in self.chains.items()}

    def load_json(self, data: dict) -> None:
        self.chains = {cid: Chain(**c) for cid, c in data.items()}

    # ---- consent --------------------------------------------------------------------------------

    def _check_client(
        self, client_id: str | None, secret: str | None = None, *, check_secret: bool = True
    ) -> dict:
        client = self.clients.get(client_id or "")
        if client is None or (check_secret and secret != client["secret"]):
            raise OAuthError(
                400, "invalid_client", "Client authentication failed: unknown client or wrong secret."
            )
        return client

    def authorize(self, client_id: str, redirect_uri: str, divisions: list[int], state: str | None) -> str:
        """Return the redirect URL carrying a fresh single-use code (the user clicked "Allow")."""
        client = self._check_client(client_id, check_secret=False)
        if redirect_uri != client["redirect_uri"]:
            raise OAuthError(
                400,
                "invalid_request",
                f"The redirect_uri '{redirect_uri}' does not match the registered one.",
            )
        # Real codes contain '!' and arrive percent-encoded; clients must decode exactly once.
        code = "stampNL001.!" + secrets.token_urlsafe(24)
        self.codes[code] = (client_id, redirect_uri, divisions, time.time() + self.code_ttl)
        query = {"code": code}
        if state is not None:
            query["state"] = state
        sep = "&" if "?" in redirect_uri else "?"
        return redirect_uri + sep + urllib.parse.urlencode(query)

    def consent(self, client_id: str, divisions: list[int]) -> Chain:
        """Start a chain without the browser (the sandbox's seeded consent); return it."""
        self._check_client(client_id, check_secret=False)
        return self._new_chain(client_id, divisions)

    def _new_chain(self, client_id: str, divisions: list[int]) -> Chain:
        now = time.time()
        chain = Chain(
            chain_id=secrets.token_hex(8),
            client_id=client_id,
            divisions=list(divisions),
            refresh_token=self._refresh_token(),
            issued_at=now,
            refresh_expires_at=now + REFRESH_LIFETIME,
        )
        chain.access_tokens[self._access_token()] = now + self.access_ttl
        self.chains[chain.chain_id] = chain
        return chain

    def revoke(self, client_id: str | None = None) -> int:
        """Withdraw consent (the user removed the app): every token of the chains dies. Return the count."""
        count = 0
        for chain in self.chains.values():
            if client_id in (None, chain.client_id) and not chain.revoked:
                chain.revoked = True
                count += 1
        return count

    # ---- token endpoint -------------------------------------------------------------------------

    @staticmethod
    def _access_token() -> str:
        return "AAEAA" + secrets.token_urlsafe(48)

    @staticmethod
    def _refresh_token() -> str:
        return "Gcp7!IAAAA" + secrets.token_urlsafe(40)

    def _pair(self, chain: Chain) -> dict:
        access = max(chain.access_tokens, key=chain.access_tokens.get)
        ttl = round(chain.access_tokens[access] - chain.issued_at)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": str(ttl),
            "refresh_token": chain.refresh_token,
        }

    def token(self, form: dict[str, str]) -> dict:
        """Handle one POST to the token endpoint; return the pair or raise OAuthError."""
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._exchange_code(form)
        if grant == "refresh_token":
            try:
                pair = self._refresh(form)
            except OAuthError as exc:
                self.stats["refresh_failed"] += 1
                if exc.error == "access_denied":
                    self.stats["refused_too_early"] += 1
                raise
            self.stats["refresh_ok"] += 1
            return pair
        raise OAuthError(400, "unsupported_grant_type", f"The grant type '{grant}' is not supported.")

    def _exchange_code(self, form: dict[str, str]) -> dict:
        self._check_client(form.get("client_id"), form.get("client_secret"))
        code = form.get("code") or ""
        entry = self.codes.pop(code, None)
        if entry is None:
            hint = " (it looks percent-encoded twice)" if "%21" in code else ""
            raise OAuthError(
                400, "invalid_grant", f"The authorization code is invalid or was already used{hint}."
            )
        client_id, redirect_uri, divisions, expires = entry
        if client_id != form.get("client_id") or redirect_uri != form.get("redirect_uri"):
            raise OAuthError(
                400, "invalid_grant", "The authorization code was issued to another client or redirect_uri."
            )
        if time.time() > expires:
            raise OAuthError(400, "invalid_grant", "The authorization code has expired.")
        self.stats["authorization_code"] += 1
        return self._pair(self._new_chain(client_id, divisions))

    def _refresh(self, form: dict[str, str]) -> dict:
        self._check_client(form.get("client_id"), form.get("client_secret"))
        token = form.get("refresh_token") or ""
        now = time.time()
        for chain in self.chains.values():
            if token == chain.refresh_token:
                break
            if token in chain.used_refresh_tokens:
                if self.reuse_error == "unauthorized_client":  # the body Exact sent in 2018 (picqer#300)
                    raise OAuthError(401, "unauthorized_client", "Old refresh token used.")
                raise OAuthError(400, "invalid_grant", "Old refresh token used.")
        else:
            raise OAuthError(
                400, "invalid_grant", "Token is not allowed, because of invalid or empty chainId"
            )
        if chain.client_id != form.get("client_id"):
            raise OAuthError(400, "invalid_grant", "The refresh token was issued to another client.")
        if chain.revoked:
            raise OAuthError(
                400, "invalid_grant", "The grant was revoked: the user withdrew consent for this app."
            )
        if now > chain.refresh_expires_at:
            raise OAuthError(
                400,
                "invalid_request",
                f"The refresh token expired at {_exact_time(chain.refresh_expires_at)} and it is now {_exact_time(now)}.",
            )
        if now - chain.issued_at < self.min_token_age:
            raise OAuthError(
                400,
                "access_denied",
                "Rate limit exceeded: access_token not expired",
                reason="TooEarlyToRefreshTokens: Rate limit exceeded: access_token not expired",
            )
        chain.used_refresh_tokens.append(chain.refresh_token)
        del chain.used_refresh_tokens[:-50]
        chain.refresh_token = self._refresh_token()
        chain.issued_at = now
        chain.refresh_expires_at = now + REFRESH_LIFETIME
        chain.access_tokens = {t: exp for t, exp in chain.access_tokens.items() if exp > now}
        chain.access_tokens[self._access_token()] = now + self.access_ttl
        return self._pair(chain)

    # ---- resource server ------------------------------------------------------------------------

    def check_access(self, token: str) -> Chain | None:
        """Return the chain of a live access token, or None (expired, unknown or revoked)."""
        now = time.time()
        for chain in self.chains.values():
            expires = chain.access_tokens.get(token)
            if expires is not None:
                return chain if expires > now and not chain.revoked else None
        return None
