"""``spendstream local start|status|stop``: three real services, and the TOML it prints works."""

from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.config import config_from_dict
from spendstream.local.kafka import api_versions_ok, find_free_ports


@pytest.mark.slow
def test_local_start_prints_a_configuration_that_ingests_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    from spendstream.synthetic import write_jsonl

    data = Path(tempfile.mkdtemp(prefix="spendstream-local-test-", dir="/var/tmp"))
    kafka, controller, pg, s3 = find_free_ports(4)
    args = ["--data-dir", str(data), "--kafka-port", str(kafka), "--kafka-controller-port",
            str(controller), "--postgres-port", str(pg), "--s3-port", str(s3)]  # fmt: skip
    try:
        assert main(["local", "start", *args]) == 0
        out = capsys.readouterr().out
        config = config_from_dict(tomllib.loads(out), "spendstream local start")
        assert config.kafka.bootstrap_servers == f"127.0.0.1:{kafka}"
        assert api_versions_ok("127.0.0.1", kafka)
        assert f"127.0.0.1:{pg}/" in config.warehouse.catalog_uri
        assert config.warehouse.location.startswith("s3://")
        for line in (data / "local.env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            monkeypatch.setenv(name, shlex.split(value)[0])
        (tmp_path / "cluster.toml").write_text(out)
        events = tmp_path / "events.jsonl"
        write_jsonl(events, 300, 3)
        cfg = ["--config", str(tmp_path / "cluster.toml")]
        assert main(["ingest", str(events), "--workdir", str(tmp_path / "a"), *cfg]) == 0
        capsys.readouterr()
        # Another machine's workdir (nothing in it) reads the same tables.
        assert main(["sql", "SELECT count(*) FROM usage_facts", "--format", "csv",
                     "--workdir", str(tmp_path / "b"), *cfg]) == 0  # fmt: skip
        assert capsys.readouterr().out.splitlines()[-1] == "300"
        # The tables are all in the bucket and the catalog: the writer's workdir holds only
        # its lock (one embedded writer per workdir) and the breakers it opened, for this
        # machine's guard() (WorkdirBreakerView); the reader's nothing at all.
        assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
            "breakers.json",
            "writer.lock",
        ]
        assert not (tmp_path / "b").exists()
        assert main(["local", "status", *args]) == 0
        status = capsys.readouterr().out
        assert "Kafka" in status and "PostgreSQL running" in status and "s3proxy running" in status
    finally:
        assert main(["local", "stop", *args]) == 0
    stopped = capsys.readouterr().out
    assert stopped.count("stopped") == 3
    assert main(["local", "status", *args]) == 1  # as `kafka-local status`: not running
    assert "running" not in capsys.readouterr().out.replace("not running", "")
    shutil.rmtree(data, ignore_errors=True)
