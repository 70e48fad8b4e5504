"""Real services on this machine, without Docker: Kafka, PostgreSQL and an S3 server.

``spendstream local start|stop|status`` runs all three (``services.py``); each also stands
alone (``kafka.LocalKafka``, ``postgres.LocalPostgres``, ``s3.LocalS3``) for tests.
"""

from __future__ import annotations

__all__: list[str] = []
