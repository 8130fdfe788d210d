"""Tracing: W3C trace context, the spans of a request, their export by the OpenTelemetry SDK to
a real OTLP/HTTP receiver (which decodes the protobuf), the config and the no-op when off."""
