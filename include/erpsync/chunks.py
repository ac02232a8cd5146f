"""Staging chunk files and the manifest that describes them in XCom.

Tasks hand rows to each other as Parquet files under the run's staging folder
(`erpsync.staging.run_staging_dir`: a local folder or object storage) and pass only a `Manifest` through XCom: the files, row counts,
columns and types, and a content hash. A writer replaces the files of an earlier try of the same
task, so a retried task leaves exactly one set behind; a reader checks every file's hash, so a
truncated or swapped file fails loudly instead of feeding wrong rows downstream.

pandas and pyarrow are imported inside the functions: DAG files import operators at parse time.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erpsync.errors import FatalSourceError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MANIFEST_VERSION", "ChunkRef", "ChunkWriter", "Manifest", "StagingError", "read_chunks"]

MANIFEST_VERSION = 1


class StagingError(FatalSourceError):
    """A staged file or manifest is missing or damaged; rerun the task that produced it."""


@dataclass(frozen=True)
class ChunkRef:
    """One Parquet file of a staged dataset."""

    uri: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Small JSON description of a staged dataset: what XCom carries instead of the rows.

    :param stage: the task that wrote it (extract, map, plan, ...).
    :param rows: total rows over all chunks.
    :param columns: column names, in order.
    :param schema: column -> Arrow type name, from the first non-empty chunk.
    :param chunks: the files, each with its row count and SHA-256.
    :param content_hash: SHA-256 over the chunk hashes in order: equal data, equal hash.
    :param extra: small stage-specific facts (counts by action, calls made), JSON only.
    """

    stage: str
    rows: int
    columns: list[str]
    schema: dict[str, str]
    chunks: list[ChunkRef]
    content_hash: str
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    @property
    def uris(self) -> list[str]:
        return [c.uri for c in self.chunks]

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Any, *, where: str = "manifest") -> Manifest:
        """Rebuild a manifest from XCom (a dict, or its JSON text when a template rendered it)."""
        if isinstance(value, Manifest):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise StagingError(f"not a manifest (invalid JSON: {exc})", where=where) from None
        if not isinstance(value, dict):
            raise StagingError(
                f"expected a manifest dict from the upstream task, got {type(value).__name__}", where=where
            )
        missing = {"stage", "rows", "columns", "schema", "chunks", "content_hash"} - set(value)
        if missing:
            raise StagingError(f"manifest lacks {sorted(missing)}", where=where)
        if value.get("version", MANIFEST_VERSION) != MANIFEST_VERSION:
            raise StagingError(f"manifest version {value['version']} is not {MANIFEST_VERSION}", where=where)
        chunks = [c if isinstance(c, ChunkRef) else ChunkRef(**c) for c in value["chunks"]]
        return cls(
            stage=value["stage"],
            rows=int(value["rows"]),
            columns=list(value["columns"]),
            schema=dict(value["schema"]),
            chunks=chunks,
            content_hash=value["content_hash"],
            extra=dict(value.get("extra") or {}),
        )


class ChunkWriter:
    """Write DataFrames as numbered Parquet files `<name>-00000.parquet` in `directory`.

    Opening a writer deletes the files an earlier try of the same task left under `name`, so the
    manifest always lists exactly what this try wrote. Each file lands under a temporary name and
    is renamed when complete (on object storage each PUT is whole already): a crash never leaves a
    half-written chunk with a final name. `directory` is a folder or an `ObjectStoragePath`.
    """

    def __init__(self, directory: Any, name: str, *, stage: str | None = None):
        from erpsync.staging import glob_fresh, is_remote

        self.directory = directory if is_remote(directory) else Path(directory)
        self.name = name
        self.stage = stage or name
        if not is_remote(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
        for old in glob_fresh(self.directory, f"{name}-*.parquet*"):
            old.unlink(missing_ok=True)
        self._chunks: list[ChunkRef] = []
        self._columns: list[str] | None = None
        self._schema: dict[str, str] = {}

    def write(self, df: pd.DataFrame) -> ChunkRef | None:
        """Write one chunk; an empty frame only records the columns."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._columns is None:
            self._columns = [str(c) for c in df.columns]
        if df.empty:
            return None
        table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        if not self._schema:
            self._schema = {f.name: str(f.type) for f in table.schema}
        from erpsync.staging import write_bytes_atomic

        path = self.directory / f"{self.name}-{len(self._chunks):05d}.parquet"
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        write_bytes_atomic(path, data)
        ref = ChunkRef(uri=str(path), rows=table.num_rows, sha256=digest)
        self._chunks.append(ref)
        return ref

    def close(self, columns: list[str] | None = None, **extra: Any) -> Manifest:
        """Return the manifest of everything written; `extra` adds small JSON facts."""
        combined = hashlib.sha256("".join(c.sha256 for c in self._chunks).encode()).hexdigest()
        return Manifest(
            stage=self.stage,
            rows=sum(c.rows for c in self._chunks),
            columns=self._columns if self._columns is not None else list(columns or []),
            schema=self._schema,
            chunks=list(self._chunks),
            content_hash=combined,
            extra=extra,
        )

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def read_chunks(manifest: Manifest | dict, *, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Yield each chunk of a staged dataset as a DataFrame, checking its hash first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erpsync.staging import staging_path

    manifest = Manifest.from_xcom(manifest)
    for ref in manifest.chunks:
        path = staging_path(ref.uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StagingError(
                f"staged chunk is missing (written by {manifest.stage!r}); rerun that task",
                where=str(path),
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref.sha256:
            raise StagingError(
                f"staged chunk changed since {manifest.stage!r} wrote it "
                f"(sha256 {digest[:12]} != {ref.sha256[:12]}); rerun that task",
                where=str(path),
            )
        table = pq.read_table(pa.BufferReader(data), columns=columns)
        if table.num_rows != ref.rows:
            raise StagingError(
                f"chunk holds {table.num_rows} rows, manifest says {ref.rows}", where=str(path)
            )
        yield table.to_pandas()
