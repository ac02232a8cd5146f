"""Asset events only when a run wrote something (issue 16): the products flow's
`erpsync://salesforce/Product2` event starts the orders flow, so an unchanged run must not emit it.

The real products DAG under `dag.test()` against the Exact and Salesforce simulators; the events and
the scheduler's queue of asset-triggered runs (`AssetDagRunQueue`, what the scheduler turns into an
`asset_triggered` run of `sf_orders_to_exact`) are read from Airflow's metadata database.
"""

from __future__ import annotations

import pytest

from tests.e2e.flow_world import run_dag

FLOW = "exact_items_to_sf_products"
CONSUMER = "sf_orders_to_exact"
URI = "erpsync://salesforce/Product2"


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db, dagbag):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce

    # The consumer must be known and unpaused for an event to queue a run of it (as in the demo).
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(dagbag, "dags-folder", None)
    with create_session() as session:
        session.query(DagModel).filter(DagModel.dag_id == CONSUMER).update({"is_paused": False})
    folder = tmp_path_factory.mktemp("asset-events")
    mp = pytest.MonkeyPatch()
    try:
        with (
            running_exact(
                folder / "exact", minutely_limit=100_000, daily_limit=1_000_000, error_budget=0, item_count=6
            ) as exact,
            running_salesforce(folder / "sf") as sf,
        ):
            mp.setenv("ERPSYNC_STATE_URL", f"sqlite:///{folder / 'state.db'}")
            mp.setenv(
                "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT",
                exact.connection_json(
                    refresh_token=exact.new_consent(), token_store_url=f"sqlite:///{folder / 'tokens.db'}"
                ),
            )
            mp.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", sf.connection_json("password"))
            yield {"exact": exact, "dag": dagbag.get_dag(FLOW)}
    finally:
        mp.undo()
        with create_session() as session:
            session.query(DagModel).filter(DagModel.dag_id == CONSUMER).update({"is_paused": True})


def sync(world, capfd, **params):
    # Six seeded items, one without a description: a sixth quarantined is fine here.
    return run_dag(world["dag"], capfd, quarantine_threshold=0.5, **params)


def asset_news() -> tuple[int, int]:
    """(events of the products asset so far, queued asset-triggered runs of the orders flow)."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)).filter(
            AssetModel.uri == URI
        )
        queued = session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == CONSUMER)
        return events.count(), queued.count()


def clear_queue() -> None:
    """Forget queued runs, as the scheduler does once it has created the run."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == CONSUMER).delete()


def test_a_run_that_writes_emits_the_event_and_queues_the_orders_flow(world, capfd):
    clear_queue()
    events, _ = asset_news()
    run = sync(world, capfd)
    assert run.ok, run.why()
    assert run.counts["created"] + run.counts["updated"] > 0, run.counts
    assert asset_news() == (events + 1, 1)


def test_an_unchanged_run_emits_no_event_and_starts_nothing(world, capfd):
    clear_queue()
    events, _ = asset_news()
    run = sync(world, capfd)
    assert run.ok, run.why()
    assert run.counts["created"] == run.counts["updated"] == 0, run.counts
    assert run.states["target.upsert"] == "success"
    assert asset_news() == (events, 0)


def test_a_dry_run_emits_no_event(world, capfd):
    from erpsync.hooks.exact_online import ExactOnlineHook

    div = world["exact"].simulator.store.divisions[1001234]
    item = next(
        i for i in div.tables["logistics/Items"].values() if i.get("IsSalesItem") and i["Description"].strip()
    )
    hook = ExactOnlineHook()
    hook.update("logistics/Items", item["ID"], {"Description": "Renamed for the dry run"})
    hook.close()
    clear_queue()
    events, _ = asset_news()
    run = sync(world, capfd, dry_run=True)
    assert run.ok, run.why()
    assert asset_news() == (events, 0)
    # The same change written for real does emit it.
    run = sync(world, capfd)
    assert run.ok, run.why()
    assert run.counts["updated"] == 1, run.counts
    assert asset_news() == (events + 1, 1)
