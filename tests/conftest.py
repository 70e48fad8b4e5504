"""Shared pytest setup: Kafka fixtures in tests/kafka_fixtures.py, PostgreSQL and S3 in
tests/service_fixtures.py."""

from hypothesis import settings

pytest_plugins = ["tests.kafka_fixtures", "tests.service_fixtures"]

# No wall-clock limit per example: speed is measured in bench/, never asserted in tests, and
# hypothesis' 200 ms default failed a property test whose first example warms Arrow up
# (4.3 s on a loaded machine: the example itself was correct).
settings.register_profile("spendstream", deadline=None)
settings.load_profile("spendstream")
