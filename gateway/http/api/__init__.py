"""The REST JSON API (``/v1/``) over the control service."""
