"""Opening the database and writing to it idempotently.

SQLite (a file in the working directory) is the embedded default, in WAL mode with a busy
timeout so that `llpf status` can read while a driver writes; PostgreSQL serves clusters. Only the
driver writes. Writes are upserts on natural keys, so recording a result twice is harmless.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.store.schema import Base

logger = logging.getLogger(__name__)

DEFAULT_DB_URL = "sqlite:///llpf.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class StoreError(RuntimeError):
    """The database cannot be opened or used; the message says which and why."""


def now() -> datetime:
    return datetime.now(UTC)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def dumps_json(value: Any) -> str:
    """JSON for the JSON columns, NaN and infinities as null.

    PostgreSQL's JSON types reject the NaN/Infinity tokens Python writes; a diverged loss is
    recorded as null (its stage records the failure itself) on every database alike.
    """
    return json.dumps(_finite(value))


def make_engine(url: str) -> Engine:
    """An engine for `url`, checked by connecting once. Raises StoreError naming url and reason."""
    try:
        engine = create_engine(url, pool_pre_ping=True, json_serializer=dumps_json)
    except (ArgumentError, NoSuchModuleError, ImportError) as error:
        raise StoreError(f"cannot open database {url!r}: {error}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    try:
        with engine.connect():
            pass
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StoreError(f"cannot open database {safe_url(url)!r}: {reason}") from None
    return engine


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _configure_sqlite(engine: Engine) -> None:
    database = engine.url.database
    if database and database != ":memory:":
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StoreError(
                f"cannot open database {engine.url!s}: directory {str(parent)!r} does not exist"
            )

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


class Store:
    """The experiment database: an engine and a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def ensure_schema(self) -> None:
        """Bring the schema to the newest version (Alembic migrations shipped in the package)."""
        from orchestrator.store.migrate import upgrade

        upgrade(self.engine)

    def has_schema(self) -> bool:
        return inspect(self.engine).has_table("experiments")

    def session(self) -> Session:
        return self.sessions()

    def artifact_root_default(self) -> str:
        """Where artifacts go when not configured: beside a SQLite file, else the working dir."""
        if self.engine.dialect.name == "sqlite" and self.engine.url.database not in (
            None,
            ":memory:",
        ):
            database = Path(self.engine.url.database).expanduser().resolve()
            return str(database.parent / f"{database.stem}_artifacts")
        return str(Path("llpf_artifacts").resolve())


def upsert(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    keys: Iterable[str],
) -> None:
    """Insert `rows`, or update the existing rows with the same natural `keys`."""
    if not rows:
        return
    keys = list(keys)
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise StoreError(f"database dialect {dialect!r} is not supported; use SQLite or PostgreSQL")
    # Chunks keep each statement under the databases' bound-parameter limits.
    chunk = max(1, 30_000 // max(len(rows[0]), 1))
    for start in range(0, len(rows), chunk):
        statement = insert(model).values(list(rows[start : start + chunk]))
        updates = {c: statement.excluded[c] for c in rows[0] if c not in keys}
        statement = statement.on_conflict_do_update(index_elements=keys, set_=updates)
        session.execute(statement)
