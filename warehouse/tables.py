"""The Iceberg tables: one pyiceberg SQL catalog, five tables, and the storage they live on.

Defaults need no server: the catalog is SQLite at ``<workdir>/warehouse/catalog.db`` and the
data a directory ``<workdir>/warehouse/tables``. A cluster points ``[warehouse] catalog_uri``
at PostgreSQL and ``location`` at ``s3://bucket/prefix`` (``[warehouse.s3]``), so writers on
different machines share nothing but the catalog database and the bucket.

Each event table is partitioned by the UTC day of its time column (``ts``; dead letters:
``received_at``), with the schema of ``spendstream.table_schemas``. pyiceberg's own commit
retries are switched off (``commit.retry.num-retries = 0``): a retry must rebuild the
snapshot summary from the new head (landing.py), which pyiceberg's retry cannot know.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from spendstream.config import WarehouseConfig
from spendstream.errors import ConfigError, WarehouseError
from spendstream.table_schemas import SCHEMAS

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.table import Table

__all__ = [
    "DIGEST_COLUMN",
    "EVENT_TABLES",
    "PARTITION_COLUMN",
    "REVENUE",
    "TABLE_SCHEMAS",
    "Storage",
    "Tables",
    "resolve_storage",
    "walk_files",
]

EVENT_TABLES = ("usage_facts", "alerts", "breaker_events", "dead_letters")
PARTITION_COLUMN = {
    "usage_facts": "ts",
    "alerts": "ts",
    "breaker_events": "ts",
    "dead_letters": "received_at",
}
REVENUE = pa.schema(
    [
        ("month", pa.date32()),
        ("plan", pa.string()),
        ("user_id", pa.string()),
        ("revenue_usd", SCHEMAS["usage_facts"].field("cost_usd").type),
    ]
)
# Each fact's content digest (stream/digest.py), kept with it so a later event reusing its
# event_id is told apart from a replay (dedupe.py) across restarts; null: landed without one.
DIGEST_COLUMN = "event_digest"
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    **SCHEMAS,
    "usage_facts": SCHEMAS["usage_facts"].append(pa.field(DIGEST_COLUMN, pa.binary())),
    "revenue": REVENUE,
}

TABLE_PROPERTIES = {
    # landing.py retries itself, rebuilding the summary from the new head.
    "commit.retry.num-retries": "0",
    # Old metadata.json files go as new ones are written (each holds the whole history).
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "10",
    "write.parquet.compression-codec": "zstd",
}
# The old home-made layout's catalog: its presence means a workdir needs `warehouse migrate`.
LEGACY_CATALOG = "catalog.sqlite"


@dataclass(frozen=True, slots=True)
class Storage:
    """Where the catalog and the data are, resolved against the workdir."""

    catalog_uri: str
    location: str  # a URI: file:///... or s3://bucket/prefix
    namespace: str
    catalog_name: str
    local_root: Path  # <workdir>/warehouse: spendstream.duckdb and local-only helpers
    catalog_properties: dict[str, str] = field(default_factory=dict)
    s3_options: dict[str, Any] = field(default_factory=dict)
    # Where the secrets come from, for errors that must say what to fix: the variables'
    # names (PostgreSQL catalogs and S3 locations only), never their values.
    catalog_password_env: str = ""
    s3_key_envs: tuple[str, str] = ("", "")
    s3_checksums: str = "when_supported"  # [warehouse.s3] checksums

    def catalog_hint(self) -> str:
        env = self.catalog_password_env
        if not env:
            return ""
        state = "is set" if os.environ.get(env) else "is not set"
        return f" (its password comes from ${env}, [warehouse] catalog_password_env, which {state})"

    def storage_error(self, doing: str, exc: BaseException) -> WarehouseError:
        """An S3 (or file) error as one line saying which settings lead to it."""
        hint = ""
        if self.is_s3:
            key, secret = self.s3_key_envs
            endpoint = self.catalog_properties.get("s3.endpoint", "AWS's own")
            text = str(exc)
            if self.s3_checksums != "when_required" and (
                "XAmzContentSHA256Mismatch" in text or "HTTP status 501" in text
            ):
                # s3proxy 2.6 and others without the newer AWS SDK checksums: not the keys.
                return WarehouseError(
                    f"cannot {doing} at {self.location}: the S3 server at {endpoint} does not "
                    f"take the newer AWS SDK checksums; set [warehouse.s3] checksums = "
                    f'"when_required" ({first_line(exc)})'
                )
            if "NO_SUCH_BUCKET" in text:
                # Not the keys: the bucket [warehouse] location names is not on that server.
                bucket = urlsplit(self.location).netloc
                return WarehouseError(
                    f"cannot {doing} at {self.location}: there is no bucket {bucket!r} at "
                    f"endpoint {endpoint} ([warehouse.s3] endpoint_url); create it, or name an "
                    f"existing one in [warehouse] location"
                )
            hint = (
                f" (credentials from ${key} and ${secret}, [warehouse.s3] access_key_id_env and "
                f"secret_access_key_env; endpoint {endpoint}, [warehouse.s3] endpoint_url)"
            )
        return WarehouseError(f"cannot {doing} at {self.location}{hint}: {first_line(exc)}")

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    @property
    def describe_catalog(self) -> str:
        """The catalog's address without its password: user, host, port and database of a
        server (two workers told apart by a port were both 'postgresql+psycopg2:127.0.0.1')."""
        catalog = urlsplit(self.catalog_uri)
        if not catalog.hostname:  # sqlite:////abs/catalog.db: its path, all slashes kept
            return f"{catalog.scheme}://{catalog.path}"
        netloc = f"{catalog.username}@" if catalog.username else ""
        netloc += catalog.hostname + (f":{catalog.port}" if catalog.port else "")
        return urlunsplit((catalog.scheme, netloc, catalog.path, "", ""))

    @property
    def describe(self) -> str:
        return f"catalog {self.describe_catalog}, tables at {self.location}"

    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem that reads and writes paths of ``to_fs_path``."""
        if self.is_s3:
            return pafs.S3FileSystem(**self.s3_options)
        return pafs.LocalFileSystem()

    @staticmethod
    def to_fs_path(uri: str) -> str:
        """A table file's URI as a path on ``filesystem()`` (bucket/key, or a local path)."""
        parts = urlsplit(uri)
        if parts.scheme == "s3":
            return f"{parts.netloc}{parts.path}"
        if parts.scheme in ("file", ""):
            return parts.path
        raise WarehouseError(f"unsupported file location {uri!r}")


def first_line(exc: BaseException) -> str:
    # SQLAlchemy appends a "Background on this error" link; pyarrow's S3 errors are one line.
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _env_secret(name: str, what: str, key: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"S3 {what}: environment variable {name} is not set ([warehouse.s3] {key} names it)"
        )
    return value


def resolve_storage(config: WarehouseConfig, workdir: Path) -> Storage:
    """Fill the defaults in: SQLite and a data directory under ``<workdir>/warehouse``."""
    root = Path(workdir).resolve() / "warehouse"
    uri = config.catalog_uri or f"sqlite:///{root / 'catalog.db'}"
    parts = urlsplit(uri)
    password = os.environ.get(config.catalog_password_env)
    if password and parts.scheme.startswith("postgresql"):
        netloc = f"{parts.username or ''}:{quote(password, safe='')}@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        uri = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    location = config.location or (root / "tables").as_uri()
    if location.startswith("/"):
        location = Path(location).as_uri()
    location = location.rstrip("/")
    props: dict[str, str] = {}
    s3_options: dict[str, Any] = {}
    if location.startswith("s3://"):
        s3 = config.s3
        if s3.checksums == "when_required":
            # Must be set before the first S3 client is made in this process (docs/warehouse.md).
            os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "WHEN_REQUIRED"
            os.environ["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "WHEN_REQUIRED"
        key = _env_secret(s3.access_key_id_env, "access key id", "access_key_id_env")
        secret = _env_secret(s3.secret_access_key_env, "secret access key", "secret_access_key_env")
        props = {
            "s3.access-key-id": key,
            "s3.secret-access-key": secret,
            "s3.region": s3.region,
        }
        s3_options = {"access_key": key, "secret_key": secret, "region": s3.region}
        if s3.endpoint_url:
            props["s3.endpoint"] = s3.endpoint_url
            ep = urlsplit(s3.endpoint_url)
            s3_options["endpoint_override"] = ep.netloc
            s3_options["scheme"] = ep.scheme or "https"
    return Storage(
        catalog_uri=uri,
        location=location,
        namespace=config.namespace,
        catalog_name=config.catalog_name,
        local_root=root,
        catalog_properties=props,
        s3_options=s3_options,
        catalog_password_env=(
            config.catalog_password_env if parts.scheme.startswith("postgresql") else ""
        ),
        s3_key_envs=(config.s3.access_key_id_env, config.s3.secret_access_key_env),
        s3_checksums=config.s3.checksums,
    )


class Tables:
    """The catalog and its tables; ``table(name)`` is the last loaded (or committed) version."""

    def __init__(self, storage: Storage, create: bool = True) -> None:
        from spendstream.warehouse.parsed_metadata import caching_sql_catalog

        self.storage = storage
        if storage.catalog_uri.startswith("sqlite:///"):
            Path(storage.catalog_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        if create and not storage.is_s3:
            Path(Storage.to_fs_path(storage.location)).mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            try:
                self.catalog: SqlCatalog = caching_sql_catalog()(
                    storage.catalog_name,
                    uri=storage.catalog_uri,
                    warehouse=storage.location,
                    **storage.catalog_properties,
                )
                break
            except Exception as exc:  # SQLAlchemy's errors name the database; say which key.
                # A new catalog database: pyiceberg checks for its tables, then creates them,
                # so two writers opening it at once (the stages of `spendstream run`) can
                # race; the loser finds the tables there on its next try.
                if "already exists" in str(exc) and attempt < 2:
                    continue
                raise WarehouseError(
                    f"cannot open the warehouse catalog ([warehouse] catalog_uri)"
                    f"{storage.catalog_hint()}: {first_line(exc)}"
                ) from exc
        self._tables: dict[str, Table] = {}
        if create:
            try:
                self._create_missing()
            except OSError as exc:  # a new table's metadata file, on S3 or disk
                raise storage.storage_error("create the warehouse's tables", exc) from exc

    def identifier(self, name: str) -> tuple[str, str]:
        return (self.storage.namespace, name)

    def _create_missing(self) -> None:
        from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError

        try:
            self.catalog.create_namespace_if_not_exists(self.storage.namespace)
        except Exception:
            # Another process created it between the check and the insert (pyiceberg lets
            # the database's unique-constraint error through): fine if it now exists.
            if not self.catalog.namespace_exists(self.storage.namespace):
                raise
        existing = {t[-1] for t in self.catalog.list_tables(self.storage.namespace)}
        for name, schema in TABLE_SCHEMAS.items():
            if name in existing:
                continue
            try:
                # One atomic create: the day partition is part of the table's first metadata.
                tx = self.catalog.create_table_transaction(
                    self.identifier(name), schema=schema, properties=TABLE_PROPERTIES
                )
                column = PARTITION_COLUMN.get(name)
                if column is not None:
                    from pyiceberg.transforms import DayTransform

                    with tx.update_spec() as spec:
                        spec.add_field(column, DayTransform(), f"{column}_day")
                tx.commit_transaction()
            except (TableAlreadyExistsError, CommitFailedException):
                pass  # another process created it first

    def table(self, name: str) -> Table:
        if name not in self._tables:
            self._tables[name] = self.load(name)
        return self._tables[name]

    def load(self, name: str) -> Table:
        """The table as the catalog has it now."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            tbl = self._load_unless_current(name)
        except OSError as exc:  # the metadata file, on S3 or disk
            raise self.storage.storage_error(f"read table {name}'s metadata", exc) from exc
        except NoSuchTableError:
            raise WarehouseError(
                f"no table {self.storage.namespace}.{name} in the warehouse catalog "
                f"({self.storage.describe}); run `spendstream ingest` or `demo` first"
            ) from None
        self._tables[name] = tbl
        return tbl

    def _load_unless_current(self, name: str) -> Table:
        """The catalog's version of ``name``: the one held when the catalog still points at
        its metadata file (a metadata file never changes once written), else read anew.

        A writer asks the catalog for the head several times a commit (dedupe catch-up,
        publishing the views' file lists, the outbox); reading and parsing the metadata JSON
        each time was ~0.5 us of every event ingested. The one row is read as pyiceberg's
        ``load_table`` reads it (private in 0.12, pinned)."""
        from pyiceberg.catalog.sql import IcebergTables
        from pyiceberg.exceptions import NoSuchTableError
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        catalog: Any = self.catalog
        namespace, table_name = self.identifier(name)
        with Session(catalog.engine) as session:
            stmt = select(IcebergTables).where(
                IcebergTables.catalog_name == catalog.name,
                IcebergTables.table_namespace == namespace,
                IcebergTables.table_name == table_name,
            )
            if (type_filter := catalog._iceberg_type_filter()) is not None:
                stmt = stmt.where(type_filter)
            row = session.scalar(stmt)
            if row is None:
                raise NoSuchTableError(f"Table does not exist: {namespace}.{table_name}")
            held = self._tables.get(name)
            if held is not None and row.metadata_location == held.metadata_location:
                return held
            self._check_location(name, row.metadata_location)
            tbl: Table = catalog._convert_orm_to_iceberg(row)
            return tbl

    def _check_location(self, name: str, metadata_location: str | None) -> None:
        """Refuse a table the catalog keeps outside ``[warehouse] location``: a shared catalog
        read with another worker's location would read (or fail to read) files this
        configuration does not name, with S3 settings meant for somewhere else."""
        location = self.storage.location
        if metadata_location is None or metadata_location.startswith(location + "/"):
            return
        where = metadata_location.rsplit("/metadata/", 1)[0]
        suffix = f"/{self.storage.namespace}/{name}"
        origin = self._workdir_of(where.removesuffix(suffix))
        if origin is not None:
            # A moved or copied workdir: pointing it at the tables it names would make two
            # catalogs commit to one table.
            gone = not origin.exists()
            raise ConfigError(
                f"this workdir's catalog ({self.storage.describe_catalog}) names tables in "
                f"{origin}{', which is gone' if gone else ''}: a workdir cannot be moved, "
                "renamed or copied (its catalog and its Iceberg tables record their files' "
                "absolute paths); "
                + (f"move it back to {origin}" if gone else f"use --workdir {origin}")
            )
        hint = ""
        if where.endswith(suffix):
            hint = f' (location = "{where.removesuffix(suffix)}")'
        raise ConfigError(
            f"the warehouse catalog ({self.storage.describe_catalog}) has table {name} at "
            f"{where}, outside [warehouse] location {location}: give every worker and reader "
            f"of this catalog the location its tables were created with{hint}"
        )

    def _workdir_of(self, tables_at: str) -> Path | None:
        """The workdir whose tables ``tables_at`` are, when this workdir keeps its catalog and
        tables where it would by default (``<workdir>/warehouse/``) and that one did too: this
        one was moved or copied from it."""
        root = self.storage.local_root
        defaults = (f"sqlite:///{root / 'catalog.db'}", (root / "tables").as_uri())
        if (self.storage.catalog_uri, self.storage.location) != defaults:
            return None  # a shared catalog, or a location of its own: not a workdir's copy
        if not tables_at.startswith("file://"):
            return None
        old_root = Path(urlsplit(tables_at).path)
        if old_root.name != "tables" or old_root.parent.name != root.name:
            return None
        return old_root.parent.parent

    def remember(self, name: str, tbl: Table) -> None:
        """Keep the version a commit returned (saves a catalog round trip)."""
        self._tables[name] = tbl

    def exists(self) -> bool:
        try:
            names = {t[-1] for t in self.catalog.list_tables(self.storage.namespace)}
        except Exception:
            return False
        return set(TABLE_SCHEMAS) <= names

    def close(self) -> None:
        engine = getattr(self.catalog, "engine", None)
        if engine is not None:
            engine.dispose()


def walk_files(fs: pafs.FileSystem, base: str) -> Iterator[pafs.FileInfo]:
    """Every file under ``base`` (recursively); nothing if ``base`` does not exist."""
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            yield info
