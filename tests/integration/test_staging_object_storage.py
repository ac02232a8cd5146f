"""Staging on object storage: chunks, manifests, the QuickBooks upsert's progress files, clean-up and
prune, all through Airflow's `ObjectStoragePath` against a real S3 API server (moto's server mode in
its own process, signatures checked); no client is mocked."""

from __future__ import annotations

import io
import os
import time

import pandas as pd
import pytest

from erpsync.chunks import ChunkWriter, Manifest, StagingError, read_chunks
from erpsync.errors import ConfigError
from erpsync.staging import (
    is_remote,
    prune_staging,
    remove_run_staging,
    run_staging_dir,
    staging_path,
    staging_root,
)
from tests.s3 import running_s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def staged(s3, monkeypatch):
    """A fresh bucket, a connection for it (its own id: Airflow caches a file system per id) and the
    environment that points staging there."""
    bucket = s3.create_bucket()
    conn_id = f"stage_{os.urandom(3).hex()}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", s3.conn_json())
    monkeypatch.setenv("ERPSYNC_STAGING_URL", f"s3://{bucket}/erpsync")
    monkeypatch.setenv("ERPSYNC_STAGING_CONN_ID", conn_id)
    return bucket, conn_id


def _frame(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"Id": [f"a{i}" for i in range(start, start + n)], "Amount": range(start, start + n)})


def test_chunks_round_trip_through_the_bucket(s3, staged):
    bucket, conn_id = staged
    root = staging_root()
    assert is_remote(root) and root.conn_id == conn_id
    run = run_staging_dir("sf_accounts_to_qb_customers", "manual__2026-12-07T10:00:00+00:00")
    w = ChunkWriter(run, "extract")
    w.write(_frame(0, 3))
    w.write(_frame(3, 2))
    manifest = Manifest.from_xcom(w.close(retried=0).to_xcom())  # as XCom carries it
    assert manifest.rows == 5 and len(manifest.chunks) == 2
    # the objects are in the bucket, under the run's prefix, with safe names
    prefix = "erpsync/sf_accounts_to_qb_customers/manual__2026-12-07T10_00_00+00_00/"
    assert s3.keys(bucket, prefix) == [prefix + "extract-00000.parquet", prefix + "extract-00001.parquet"]
    assert all(u.startswith(f"s3://{conn_id}@{bucket}/") for u in manifest.uris)
    # what is read back is what the bucket holds, byte for byte
    body = s3.client().get_object(Bucket=bucket, Key=prefix + "extract-00000.parquet")["Body"].read()
    assert pd.read_parquet(io.BytesIO(body))["Id"].tolist() == ["a0", "a1", "a2"]
    assert pd.concat(read_chunks(manifest))["Amount"].tolist() == [0, 1, 2, 3, 4]


def test_a_retry_replaces_the_earlier_try_s_chunks(s3, staged):
    bucket, _ = staged
    run = run_staging_dir("dag", "run1")
    first = ChunkWriter(run, "map")
    for i in range(3):
        first.write(_frame(i, 2))
    first.close()
    again = ChunkWriter(run, "map")
    again.write(_frame(0, 4))
    m = again.close()
    assert s3.keys(bucket, "erpsync/dag/run1/") == ["erpsync/dag/run1/map-00000.parquet"]
    assert m.rows == 4 and pd.concat(read_chunks(m))["Id"].tolist() == ["a0", "a1", "a2", "a3"]


def test_a_changed_or_missing_object_fails_loudly(s3, staged):
    bucket, _ = staged
    run = run_staging_dir("dag", "run2")
    w = ChunkWriter(run, "plan")
    w.write(_frame(0, 3))
    m = w.close()
    key = "erpsync/dag/run2/plan-00000.parquet"
    other = io.BytesIO()
    _frame(10, 3).to_parquet(other)
    s3.client().put_object(Bucket=bucket, Key=key, Body=other.getvalue())
    with pytest.raises(StagingError, match="changed since 'plan' wrote it") as err:
        list(read_chunks(m))
    assert bucket in err.value.where
    s3.client().delete_object(Bucket=bucket, Key=key)
    with pytest.raises(StagingError, match="staged chunk is missing"):
        list(read_chunks(m))


def test_quickbooks_upsert_progress_lives_in_the_bucket(s3, staged):
    from erpsync.operators.quickbooks_upsert import _Progress
    from erpsync.state import Identity

    bucket, _ = staged
    run = run_staging_dir("sf_accounts_to_qb_customers", "run3")
    progress = _Progress(run, "sf_accounts_to_qb_customers/run3/upsert", "ab" * 32)
    assert progress.pending() is None
    rows, already = progress.save_pending(_frame(0, 3), {"k1": Identity("k1", "80000001-1", "h1")})
    assert rows["Id"].tolist() == ["a0", "a1", "a2"] and already["k1"].target_id == "80000001-1"
    progress.save_job("key/b0/add", {"id": "j1", "state": "completed", "results": []})
    progress.save_job("key/b0/mod", {"id": "j2", "state": "cancelled"})  # asked for again on resume
    # a second process (another worker) sees the same progress: read through a new path object
    again = _Progress(staging_path(str(run)), "sf_accounts_to_qb_customers/run3/upsert", "ab" * 32)
    assert again.job("key/b0/add")["id"] == "j1" and again.job("key/b0/mod") is None
    assert again.pending()[0]["Id"].tolist() == ["a0", "a1", "a2"]
    names = [k.rsplit("/", 1)[1] for k in s3.keys(bucket, "erpsync/sf_accounts_to_qb_customers/run3/")]
    assert sorted(names)[:2] == ["already.json", "job-" + _Progress._name("key/b0/add") + ".json"]
    saved = again.save_batch(0, jobs=["j1"], calls=[], results=[{"key": "a0"}])
    assert progress.batch(0) == saved
    names = [k.rsplit("/", 1)[1] for k in s3.keys(bucket, "erpsync/sf_accounts_to_qb_customers/run3/")]
    assert sorted(names) == ["already.json", "batch-00000.json", "pending.parquet"], "job answers dropped"


def test_run_report_is_written_to_the_bucket(s3, staged):
    from erpsync.report import RunReport

    bucket, _ = staged
    run = run_staging_dir("dag", "run4")
    report = RunReport(flow="f", run_id="run4", status="success", counts={"created": 2})
    files = report.write(run)
    assert s3.keys(bucket, "erpsync/dag/run4/") == [
        "erpsync/dag/run4/report.html",
        "erpsync/dag/run4/report.md",
    ]
    assert "created" in staging_path(files["markdown"]).read_text()


def test_run_clean_up_and_prune_remove_only_what_they_should(s3, staged):
    bucket, _ = staged
    for run_id in ("keep", "drop"):
        w = ChunkWriter(run_staging_dir("dag", run_id), "extract")
        w.write(_frame(0, 1))
        w.close()
    assert remove_run_staging("dag", "drop") is True
    assert remove_run_staging("dag", "drop") is False
    assert s3.keys(bucket, "erpsync/dag/") == ["erpsync/dag/keep/extract-00000.parquet"]
    root = staging_root()
    assert prune_staging(root, 30) == 0, "a fresh run is kept"
    assert s3.keys(bucket, "erpsync/dag/keep/")
    assert prune_staging(root, 30, now=time.time() + 31 * 86400) == 1
    assert s3.keys(bucket) == []


def test_erpsync_prune_cleans_the_bucket(s3, staged, tmp_path, capsys):
    from erpsync.cli import main

    bucket, _ = staged
    w = ChunkWriter(run_staging_dir("dag", "old"), "extract")
    w.write(_frame(0, 1))
    w.close()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert main(["prune", "--state-url", url, "--older-than", "0"]) == 0
    assert "1 run folder(s) removed" in capsys.readouterr().out
    assert s3.keys(bucket) == []


def test_a_missing_bucket_is_a_clear_config_error(s3, staged, monkeypatch):
    monkeypatch.setenv("ERPSYNC_STAGING_URL", "s3://no-such-bucket-here/erpsync")
    with pytest.raises(ConfigError, match=r"no-such-bucket-here.*does not exist") as err:
        run_staging_dir("dag", "run")
    assert err.value.where == "ERPSYNC_STAGING_URL"


def test_refused_credentials_are_a_clear_config_error(s3, staged, monkeypatch):
    bucket, _ = staged
    conn_id = f"stage_bad_{os.urandom(3).hex()}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", s3.conn_json(secret="not-the-secret"))
    monkeypatch.setenv("ERPSYNC_STAGING_CONN_ID", conn_id)
    with pytest.raises(
        ConfigError, match=f"cannot reach staging s3://{bucket}/erpsync with connection '{conn_id}'"
    ) as err:
        run_staging_dir("dag", "run")
    assert "not-the-secret" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ERPSYNC_STAGING_ROOT", "s3://bucket/x", "put object storage URLs in ERPSYNC_STAGING_URL"),
        ("ERPSYNC_STAGING_URL", "bucket/x", "not an object storage URL"),
        ("ERPSYNC_STAGING_URL", "file:///tmp/x", "put a local folder in ERPSYNC_STAGING_ROOT"),
    ],
)
def test_bad_settings_name_the_setting(monkeypatch, name, value, message):
    monkeypatch.delenv("ERPSYNC_STAGING_URL", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as err:
        staging_root()
    assert err.value.where == name


def test_a_local_folder_stays_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv("ERPSYNC_STAGING_URL", raising=False)
    monkeypatch.setenv("ERPSYNC_STAGING_ROOT", str(tmp_path))
    run = run_staging_dir("dag", "run")
    assert not is_remote(run) and run.is_dir() and run.parent.parent == tmp_path
