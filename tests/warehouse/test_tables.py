"""Where the warehouse lives: defaults under the workdir, clusters by configuration, no
secret in the TOML."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from spendstream.config import WarehouseConfig, config_from_dict
from spendstream.errors import ConfigError, LegacyWarehouse
from spendstream.warehouse import Warehouse
from spendstream.warehouse.tables import PARTITION_COLUMN, resolve_storage


def test_the_default_is_sqlite_and_a_directory_under_the_workdir(tmp_path: Path) -> None:
    storage = resolve_storage(WarehouseConfig(), tmp_path)
    assert storage.catalog_uri == f"sqlite:///{tmp_path.resolve()}/warehouse/catalog.db"
    assert storage.location == (tmp_path.resolve() / "warehouse" / "tables").as_uri()
    assert not storage.is_s3


def test_the_catalog_password_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_PW", "s3cr/t@!")
    config = WarehouseConfig(
        catalog_uri="postgresql+psycopg2://spend@db:5432/wh", catalog_password_env="PG_PW"
    )
    uri = resolve_storage(config, tmp_path).catalog_uri
    assert uri == "postgresql+psycopg2://spend:s3cr%2Ft%40%21@db:5432/wh"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"warehouse": {"catalog_uri": "postgresql://u:pw@db/x"}}, "must not contain a password"),
        ({"warehouse": {"s3": {"access_key_id": "AKIA"}}}, "must not be written inline"),
        ({"warehouse": {"s3": {"secret_access_key": "x"}}}, "must not be written inline"),
        ({"warehouse": {"location": "relative/dir"}}, "absolute path"),
        ({"warehouse": {"dedupe_window_days": 0}}, "dedupe_window_days"),
        ({"warehouse": {"bucket": "x"}}, "unknown key"),
    ],
)
def test_bad_warehouse_keys_are_named(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(section)


def test_s3_keys_missing_from_the_environment_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    config = config_from_dict(
        {"warehouse": {"location": "s3://b/p", "s3": {"access_key_id_env": "NO_SUCH_KEY"}}}
    ).warehouse
    with pytest.raises(ConfigError, match=r"NO_SUCH_KEY .*\[warehouse.s3\] access_key_id_env"):
        resolve_storage(config, tmp_path)


def test_a_server_catalog_is_described_by_its_address_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDSTREAM_CATALOG_PASSWORD", "s3cr3t")
    config = config_from_dict(
        {"warehouse": {"catalog_uri": "postgresql+psycopg2://spendstream@db:55432/meter"}}
    ).warehouse
    described = resolve_storage(config, tmp_path).describe
    assert described.startswith("catalog postgresql+psycopg2://spendstream@db:55432/meter, ")
    assert "s3cr3t" not in described


def test_tables_are_partitioned_by_the_day_of_their_time_column(tmp_path: Path) -> None:
    with Warehouse(tmp_path) as wh:
        for name, column in PARTITION_COLUMN.items():
            spec = wh.tables.load(name).spec()
            assert [(f.name, str(f.transform)) for f in spec.fields] == [(f"{column}_day", "day")]
        assert wh.tables.load("revenue").spec().is_unpartitioned()
        props = wh.tables.load("usage_facts").properties
        assert props["commit.retry.num-retries"] == "0"


def test_an_old_layout_is_refused_by_every_command_with_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spendstream.cli import main

    (tmp_path / "warehouse").mkdir()
    (tmp_path / "warehouse" / "catalog.sqlite").write_bytes(b"")
    with pytest.raises(LegacyWarehouse, match="spendstream warehouse migrate"):
        Warehouse(tmp_path)
    for argv in (["sql", "SELECT 1"], ["query", "cost_by_team"], ["warehouse", "compact"]):
        assert main([*argv, "--workdir", str(tmp_path)]) != 0
        assert "spendstream warehouse migrate" in capsys.readouterr().err


def test_writers_opening_a_new_catalog_at_once_all_open_it(tmp_path: Path) -> None:
    """`spendstream run` opens its stages' writers at the same moment on a fresh workdir:
    pyiceberg creates its catalog tables after checking for them, so they race."""
    import threading

    from spendstream.warehouse.tables import Tables

    storage = resolve_storage(WarehouseConfig(), tmp_path)
    storage.local_root.mkdir(parents=True)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            Tables(storage, create=False).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_load_keeps_the_held_table_until_another_writer_commits(tmp_path: Path) -> None:
    """Tables.load skips re-reading metadata the catalog still points at, and never hides
    another writer's commit."""
    from tests.warehouse.factories import fact

    a = Warehouse(tmp_path, writer="usage/0")
    b = Warehouse(tmp_path, writer="usage/1")
    try:
        a.commit(facts=[fact()], positions={"p0": 1})
        held = a.tables.load("usage_facts")
        assert a.tables.load("usage_facts") is held  # unchanged: the same object
        b.commit(facts=[fact(event_id="other")], positions={"p1": 1})
        fresh = a.tables.load("usage_facts")
        assert fresh is not held
        assert fresh.metadata_location != held.metadata_location
        assert fresh.current_snapshot() == b.tables.load("usage_facts").current_snapshot()
        # a sees b's fact as landed: its dedupe store caught up from the fresh head.
        from spendstream.warehouse import DUPLICATE
        from spendstream.warehouse.tables import TABLE_SCHEMAS

        ts = pa.array([fact().event.ts], TABLE_SCHEMAS["usage_facts"].field("ts").type)
        assert a.classify(pa.array(["other"]), ts).tolist() == [DUPLICATE]
    finally:
        a.close()
        b.close()


def test_a_catalog_missing_one_of_the_tables_is_not_opened_for_reading(tmp_path: Path) -> None:
    from spendstream.warehouse.reading import open_reader

    with Warehouse(tmp_path) as wh:
        wh.tables.catalog.drop_table(wh.tables.identifier("revenue"))
        assert not wh.tables.exists()
    with pytest.raises(ConfigError, match="no spendstream tables"):
        open_reader(tmp_path)


def _workdir_with_a_fact(workdir: Path) -> None:
    from spendstream.cli import main

    events = workdir.parent / f"{workdir.name}-events.jsonl"
    events.write_text(
        '{"event_id": "a", "ts": "2026-11-01T12:00:00Z", "provider": "openai", '
        '"model": "gpt-5-mini", "input_tokens": 10, "output_tokens": 1}\n'
    )
    assert main(["ingest", str(events), "--workdir", str(workdir), "--no-route-alerts"]) == 0


def test_a_moved_workdir_is_told_to_go_back_and_a_copy_to_use_the_original(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its Iceberg tables keep absolute paths: a moved workdir was told to set [warehouse]
    # location to the old place (gone), and a copy to point at the original's tables, which
    # would have made two catalogs commit to one table.
    from spendstream.cli import main

    first, moved = tmp_path / "first", tmp_path / "moved"
    _workdir_with_a_fact(first)
    capsys.readouterr()
    first.rename(moved)
    assert main(["query", "cost_by_team", "--workdir", str(moved)]) == 2
    err = capsys.readouterr().err
    assert f"names tables in {first.resolve()}, which is gone" in err
    assert "cannot be moved, renamed or copied (its catalog and" in err
    assert err.rstrip().endswith(f"move it back to {first.resolve()}")
    assert f"sqlite:///{moved.resolve()}/warehouse/catalog.db" in err

    moved.rename(first)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    assert main(["query", "cost_by_team", "--workdir", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"names tables in {first.resolve()}: a workdir cannot be moved" in err
    assert err.rstrip().endswith(f"use --workdir {first.resolve()}")
    assert main(["query", "cost_by_team", "--workdir", str(first)]) == 0


def test_a_sqlite_catalog_is_described_with_its_whole_path(tmp_path: Path) -> None:
    # It lost a slash ('sqlite://tmp/...'), which reads as a host named tmp.
    described = resolve_storage(WarehouseConfig(), tmp_path).describe_catalog
    assert described == f"sqlite:///{tmp_path.resolve()}/warehouse/catalog.db"
