"""foldermon-agent: a durable folder queue with a line pipeline and OpenTelemetry."""

__version__ = "0.1.0"

__all__ = ["__version__"]
