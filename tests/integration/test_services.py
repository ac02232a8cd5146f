"""The harness reaches the machine's real PostgreSQL and Redis, in throwaway namespaces."""

from __future__ import annotations


def test_postgres_throwaway_database_is_usable(postgres_url):
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE probe (id int primary key, name text)"))
        conn.execute(sa.text("INSERT INTO probe VALUES (1, 'a'), (2, 'b')"))
        assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT current_database()")).scalar_one().startswith("erpsync_test_")
    engine.dispose()


def test_redis_namespace_round_trip(redis_namespace):
    client, prefix = redis_namespace
    client.set(prefix + "k", "v", ex=60)
    assert client.get(prefix + "k") == b"v"
