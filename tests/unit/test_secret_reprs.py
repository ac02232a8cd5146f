"""Settings and value objects that hold secrets never print them (repr/str end up in logs and tracebacks)."""

from __future__ import annotations

from erpsync.hooks._exact_tokens import TokenPair
from erpsync.hooks.qbwc_bridge import BridgeConfig
from erpsync.localstack import AirflowApi
from erpsync.qbwc_bridge.config import load_settings

TOKEN = "Zq3-vN8kLr5tYw2pXc7bHs4dMf9gJe6a"


def test_bridge_settings_hide_the_api_token_and_the_database_password():
    settings = load_settings(
        database_url="postgresql://bridge:db-pass-771@db.example.com/qbwc",
        api_token=TOKEN,
        environment="development",
    )
    for shown in (repr(settings), str(settings)):
        assert TOKEN not in shown and "db-pass-771" not in shown
        assert "***@db.example.com/qbwc" in shown and "api_token='***'" in shown
    assert settings.api_token == TOKEN  # the value itself is untouched


def test_client_side_value_objects_hide_their_secrets():
    shown = [
        repr(BridgeConfig("https://bridge.example.com", TOKEN, True, "acme", 30.0)),
        repr(AirflowApi("http://localhost:8080", "admin", "airflow-pw-99", TOKEN)),
        repr(TokenPair(TOKEN, "refresh-" + TOKEN, 600.0)),
    ]
    for text in shown:
        assert TOKEN not in text and "airflow-pw-99" not in text
    assert "https://bridge.example.com" in shown[0] and "admin" in shown[1] and "600.0" in shown[2]
