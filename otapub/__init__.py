"""otapub: a GitOps static-manifest publisher for ESP32 OTA updates."""

__version__ = "0.1.0"
