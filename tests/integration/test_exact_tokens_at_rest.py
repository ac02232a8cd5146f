"""Exact tokens at rest: encrypted with the connection's or Airflow's Fernet key, private store file.

The hook talks to the Exact simulator over sockets and rotates real refresh tokens; the assertions
read the store's table directly, as someone with a copy of the database file would.
"""

from __future__ import annotations

import json
import os
import stat
import traceback

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from erpsync.errors import ConfigError
from erpsync.hooks._exact_tokens import TokenStore
from erpsync.hooks.exact_online import ExactOnlineHook
from erpsync.sandbox.exact.testing import running_exact


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    # min_token_age=0: a test may force a refresh at once (keep_alive with max age 0).
    with running_exact(
        tmp_path_factory.mktemp("exact_at_rest"), min_token_age=0, minutely_limit=100_000
    ) as running:
        yield running


@pytest.fixture
def make_hook(exact, monkeypatch, tmp_path):
    hooks = []

    def make(**extra) -> ExactOnlineHook:
        extra.setdefault("refresh_token", exact.new_consent())
        extra.setdefault("token_store_url", f"sqlite:///{tmp_path / 'tokens.db'}")
        monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", exact.connection_json(**extra))
        hooks.append(ExactOnlineHook())
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


def _raw_row(url: str) -> dict:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT * FROM erpsync_exact_tokens")).mappings().one())
    finally:
        engine.dispose()


def _live_refresh_tokens(exact) -> set[str]:
    return {c.refresh_token for c in exact.simulator.oauth.chains.values() if not c.revoked}


def test_tokens_are_encrypted_with_the_connection_key(make_hook, exact, tmp_path):
    key = Fernet.generate_key().decode()
    hook = make_hook(token_encryption_key=key)
    assert hook.get_records("vat/VATCodes", select="Code")
    raw = _raw_row(f"sqlite:///{tmp_path / 'tokens.db'}")
    stored = hook.token_store.read(hook.settings.store_key)
    assert stored["refresh_token"] in _live_refresh_tokens(exact)
    for name in ("access_token", "refresh_token"):
        assert raw[name].startswith("fernet:"), name
        assert stored[name] not in raw[name]
        assert Fernet(key).decrypt(raw[name][len("fernet:") :].encode()).decode() == stored[name]


def test_airflow_fernet_key_encrypts_when_the_connection_has_none(make_hook, exact, tmp_path, monkeypatch):
    from airflow.models.crypto import get_fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", key)
    get_fernet.cache_clear()
    try:
        hook = make_hook()
        assert hook.get_records("vat/VATCodes", select="Code")
    finally:
        monkeypatch.delenv("AIRFLOW__CORE__FERNET_KEY")
        get_fernet.cache_clear()
    raw = _raw_row(f"sqlite:///{tmp_path / 'tokens.db'}")
    assert raw["refresh_token"].startswith("fernet:")
    plain = Fernet(key).decrypt(raw["refresh_token"][len("fernet:") :].encode()).decode()
    assert plain in _live_refresh_tokens(exact)


def test_plain_rows_stay_readable_and_are_encrypted_on_the_next_write(make_hook, exact, tmp_path):
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    consent = exact.new_consent()
    old = make_hook(refresh_token=consent)  # no key anywhere: written as plain text (the old format)
    assert old.get_records("vat/VATCodes", select="Code")
    before = _raw_row(url)
    assert before["refresh_token"] in _live_refresh_tokens(exact)

    key = Fernet.generate_key().decode()
    hook = make_hook(refresh_token=consent, token_encryption_key=key)
    assert hook.get_records("vat/VATCodes", select="Code")  # reads the plain row
    assert _raw_row(url)["access_token"] == before["access_token"]  # nothing written yet
    hook.keep_alive(max_age_days=0)  # the next write: a refresh
    after = _raw_row(url)
    assert after["refresh_count"] == before["refresh_count"] + 1
    assert after["refresh_token"].startswith("fernet:") and after["access_token"].startswith("fernet:")
    plain = Fernet(key).decrypt(after["refresh_token"][len("fernet:") :].encode()).decode()
    assert plain in _live_refresh_tokens(exact)


def test_a_wrong_or_missing_key_names_the_key_to_set(make_hook, tmp_path):
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    hook = make_hook(token_encryption_key=Fernet.generate_key().decode())
    assert hook.get_records("vat/VATCodes", select="Code")
    store_key = hook.settings.store_key
    with pytest.raises(ConfigError, match="another key than token_encryption_key") as wrong:
        TokenStore(url, encryption_key=Fernet.generate_key().decode()).read(store_key)
    assert "AIRFLOW__CORE__FERNET_KEY" in wrong.value.message and wrong.value.where == store_key
    with pytest.raises(ConfigError, match=r"encrypted but no key is configured.*token_encryption_key"):
        TokenStore(url).read(store_key)
    with pytest.raises(ConfigError, match="not a Fernet key") as bad:
        TokenStore(url, encryption_key="not-a-key").read(store_key)
    assert bad.value.where == "token_encryption_key"


def test_the_store_file_is_private(make_hook, tmp_path):
    previous = os.umask(0o022)  # the usual umask: SQLite alone would create the file 0644
    try:
        hook = make_hook(token_store_url=f"sqlite:///{tmp_path / 'private' / 'tokens.db'}")
        assert hook.get_records("vat/VATCodes", select="Code")
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "private").iterdir() if p.name.startswith("tokens.db")]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_store_url_without_scheme_never_shows_its_password():
    with pytest.raises(ConfigError) as caught:
        TokenStore("alice:s3cret-pw@db.example.com/tokens").read("k")
    exc = caught.value
    # What a log shows: the message and every chained cause a traceback would print.
    shown = [str(exc), repr(exc)]
    shown += [
        str(c) for c in (exc.__cause__, exc.__context__) if c is not None and not exc.__suppress_context__
    ]
    text = " ".join(shown) + "".join(traceback.format_exception_only(exc))
    assert "s3cret-pw" not in text
    assert "***@db.example.com/tokens" in caught.value.message
    assert "token_store_url" in text


def test_the_store_and_its_settings_hide_secrets_in_repr(make_hook):
    hook = make_hook(
        token_store_url="postgresql+psycopg://bob:pg-secret@127.0.0.1:1/nowhere",
        token_encryption_key=Fernet.generate_key().decode(),
    )
    conn = json.loads(os.environ["AIRFLOW_CONN_EXACT_ONLINE_DEFAULT"])
    shown = repr(hook.settings) + repr(hook.token_store)
    for secret in (
        conn["password"],
        conn["extra"]["refresh_token"],
        "pg-secret",
        conn["extra"]["token_encryption_key"],
    ):
        assert secret not in shown
    assert hook.settings.client_id in shown
