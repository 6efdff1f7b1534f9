"""Where rendered documents are kept: one small interface, the database by default.

The database store puts the PDF in the ``documents`` table, so every worker on every machine
reads what any of them made; an object store (S3 and the like) would implement the same
three methods. A document is written once and never replaced: ``put`` of an object that has
one already keeps the first (finalized documents never change).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from sqlmodel import Session, col, select

from worker.tables import Document


@dataclass(frozen=True, slots=True)
class StoredDocument:
    object_id: str
    kind: str
    locale: str
    content_hash: str
    size: int
    created: int
    content: bytes


def stored(object_id: str, kind: str, locale: str, content: bytes, created: int) -> StoredDocument:
    return StoredDocument(
        object_id, kind, locale, hashlib.sha256(content).hexdigest(), len(content), created, content
    )


class DocumentStore(Protocol):
    def get(self, object_id: str) -> StoredDocument | None: ...

    def put(self, document: StoredDocument) -> StoredDocument:
        """Keep ``document`` unless the object has one; returns the one kept."""
        ...

    def which_exist(self, object_ids: Collection[str]) -> set[str]: ...


class DatabaseStore:
    """``documents`` rows in the caller's session (and transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, object_id: str) -> StoredDocument | None:
        row = self.session.get(Document, object_id)
        if row is None:
            return None
        return StoredDocument(
            row.object_id, row.kind, row.locale, row.content_hash, row.size, row.created, row.content
        )

    def put(self, document: StoredDocument) -> StoredDocument:
        kept = self.get(document.object_id)
        if kept is not None:
            return kept
        self.session.add(
            Document(
                object_id=document.object_id,
                kind=document.kind,
                locale=document.locale,
                content_hash=document.content_hash,
                size=document.size,
                content=document.content,
                created=document.created,
            )
        )
        return document

    def which_exist(self, object_ids: Collection[str]) -> set[str]:
        """The ids among ``object_ids`` that have a document (one query, content not read)."""
        if not object_ids:
            return set()
        return set(
            self.session.exec(select(Document.object_id).where(col(Document.object_id).in_(object_ids)))
        )
