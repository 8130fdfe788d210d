"""The OTLP/HTTP receiver fixture for every tracing test."""

from tests.tracing.receiver import receiver  # noqa: F401 - a fixture
