"""Telemetry sources: Kafka, sidecar log files and stdin, HTTP push, Envoy gRPC access-log service."""
