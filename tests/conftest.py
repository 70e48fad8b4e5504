"""Shared pytest setup: Kafka fixtures in tests/kafka_fixtures.py, PostgreSQL and S3 in
tests/service_fixtures.py."""

pytest_plugins = ["tests.kafka_fixtures", "tests.service_fixtures"]
