"""The marker of config fields that name files: :mod:`gateway.config` resolves every field
typed :data:`ConfigPath` against the config file's directory. Its own module so that config
sections declared next to their code (``gateway.cluster.settings``) can use it too."""

from __future__ import annotations

from typing import Annotated


class PathMarker:
    """Marks a field holding a file or directory name (resolved against the config file)."""


PATH = PathMarker()

ConfigPath = Annotated[str, PATH]
