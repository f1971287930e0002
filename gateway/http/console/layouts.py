"""Video wall layouts, saved per principal, so a control room's wall (or an officer's phone)
opens as it was left, whichever browser signs in as that principal.

A layout is 1, 4, 9 or 16 tiles and the camera in each (or none). It names camera ids only:
what each tile may play is decided when it plays, so a layout naming a camera whose grant has
since been revoked shows a refusal in that tile, never the picture.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from tenants.control.schemas import Body, Id
from tenants.db import Database

__all__ = ["TILES", "Layout", "LayoutStore"]

TILES = (1, 4, 9, 16)

MIGRATIONS = [
    """
    CREATE TABLE console_layouts (
        principal TEXT PRIMARY KEY,
        layout TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
]


class Layout(Body):
    tiles: Literal[1, 4, 9, 16] = 4
    cameras: Annotated[list[Id | None], Field(max_length=16)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fits(self) -> Layout:
        if len(self.cameras) > self.tiles:
            self.cameras = self.cameras[: self.tiles]
        return self

    @classmethod
    def first(cls, visible: list[str], tiles: int = 4) -> Layout:
        """Before anything is saved: the first cameras the principal may see."""
        return cls.model_validate({"tiles": tiles, "cameras": visible[:tiles]})

    def per_tile(self) -> list[str | None]:
        """One camera id (or None: an empty tile) per tile."""
        return [*self.cameras, *([None] * (self.tiles - len(self.cameras)))]


class LayoutStore:
    """Layouts in the tenancy database (blocking: call from a thread)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("console", MIGRATIONS)

    def get(self, principal: str) -> Layout | None:
        row = self.db.query_one(
            "SELECT layout FROM console_layouts WHERE principal = ?", (principal,)
        )
        if row is None:
            return None
        try:
            return Layout.model_validate(json.loads(row[0]))
        except ValueError:
            return None  # a layout of an older shape: start afresh

    def put(self, principal: str, layout: Layout) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.db.execute(
            "INSERT INTO console_layouts (principal, layout, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (principal) DO UPDATE SET layout = excluded.layout,"
            " updated_at = excluded.updated_at",
            (principal, layout.model_dump_json(), now),
        )
