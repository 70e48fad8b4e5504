"""Shared pytest setup: the Kafka fixtures live in tests/kafka_fixtures.py."""

pytest_plugins = ["tests.kafka_fixtures"]
