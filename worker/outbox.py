"""Outbox bookkeeping that happens outside the operation's transaction."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col

from worker import clock
from worker.db import UnitOfWork
from worker.tables import OutboxMessage


def mark_published(keys: list[str]) -> None:
    """Best effort: a row left unmarked is only published once more by the reconciler."""
    with UnitOfWork() as uow:
        uow.session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.key).in_(keys))
            .values(published_at=clock.now(), publish_count=OutboxMessage.publish_count + 1)
        )
        uow.commit()
