"""Staged chunk files round-trip, are replaced on retry, and fail loudly when damaged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from erpsync.chunks import ChunkWriter, Manifest, StagingError, read_chunks


def _frame(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"Id": [f"a{i}" for i in range(start, start + n)], "Amount": range(start, start + n)})


def test_round_trip_and_manifest_is_small_json(tmp_path):
    w = ChunkWriter(tmp_path, "extract")
    w.write(_frame(0, 3))
    w.write(_frame(3, 0))
    w.write(_frame(3, 2))
    m = w.close(retried=1)
    assert m.rows == 5 and len(m.chunks) == 2 and m.columns == ["Id", "Amount"]
    assert m.schema == {"Id": "large_string", "Amount": "int64"}
    xcom = json.loads(json.dumps(m.to_xcom()))
    assert len(json.dumps(xcom)) < 2000, "XCom carries a manifest, never rows"
    back = Manifest.from_xcom(xcom)
    assert back == m and back.extra == {"retried": 1}
    frames = list(read_chunks(xcom))
    assert pd.concat(frames)["Id"].tolist() == [f"a{i}" for i in range(5)]
    assert next(iter(read_chunks(m, columns=["Amount"]))).columns.tolist() == ["Amount"]


def test_same_data_same_hash_and_retry_replaces_files(tmp_path):
    first = ChunkWriter(tmp_path, "map")
    for _ in range(3):
        first.write(_frame(0, 4))
    m1 = first.close()
    again = ChunkWriter(tmp_path, "map")  # a retried task
    again.write(_frame(0, 4))
    m2 = again.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map-00000.parquet"]
    assert m1.chunks[0].sha256 == m2.chunks[0].sha256
    assert m2.rows == 4


def test_empty_dataset_keeps_columns(tmp_path):
    w = ChunkWriter(tmp_path, "plan")
    w.write(_frame(0, 0))
    m = w.close()
    assert m.rows == 0 and m.chunks == [] and m.columns == ["Id", "Amount"]
    assert list(read_chunks(m)) == []


def test_missing_and_altered_chunks_name_the_file(tmp_path):
    w = ChunkWriter(tmp_path, "extract")
    w.write(_frame(0, 3))
    w.write(_frame(3, 3))
    m = w.close()
    path0, path1 = (c.uri for c in m.chunks)
    with open(path1, "r+b") as f:
        f.seek(10)
        f.write(b"XX")
    with pytest.raises(StagingError, match="changed since 'extract' wrote it") as exc:
        list(read_chunks(m))
    assert exc.value.where == path1
    import os

    os.unlink(path0)
    with pytest.raises(StagingError, match="missing") as exc:
        next(read_chunks(m))
    assert exc.value.where == path0


@pytest.mark.parametrize(
    "value, message",
    [
        ("{not json", "invalid JSON"),
        (["a"], "expected a manifest dict"),
        ({"stage": "x"}, "manifest lacks"),
        (
            {
                "stage": "x",
                "rows": 0,
                "columns": [],
                "schema": {},
                "chunks": [],
                "content_hash": "",
                "version": 9,
            },
            "version 9",
        ),
    ],
)
def test_malformed_manifests_are_refused(value, message):
    with pytest.raises(StagingError, match=message) as exc:
        Manifest.from_xcom(value, where="plan <- map")
    assert exc.value.where == "plan <- map"


def test_the_staging_root_is_a_folder_and_a_url_is_refused_by_name(tmp_path, monkeypatch):
    """Run folders are made under ERPSYNC_STAGING_ROOT with safe names; an s3:// URL there would
    otherwise become a local folder called 's3:', so it is refused, naming the setting for URLs."""
    from erpsync.errors import ConfigError
    from erpsync.staging import run_staging_dir

    monkeypatch.delenv("ERPSYNC_STAGING_URL", raising=False)
    monkeypatch.setenv("ERPSYNC_STAGING_ROOT", str(tmp_path / "staging"))
    folder = run_staging_dir("flow", "manual__2026-01-01T00:00:00+00:00")
    assert folder == tmp_path / "staging" / "flow" / "manual__2026-01-01T00_00_00+00_00" and folder.is_dir()
    monkeypatch.setenv("ERPSYNC_STAGING_ROOT", "s3://bucket/staging")
    with pytest.raises(
        ConfigError, match="ERPSYNC_STAGING_ROOT='s3://bucket/staging' is a folder; put object storage URLs"
    ):
        run_staging_dir("flow", "r1")
