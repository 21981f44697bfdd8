"""The routing change stamp: one row whose value triggers raise whenever what resolve
answers could change (migration 0007 lists the tables and columns they watch)."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Integer
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class RoutingStamp(Base):
    """Read by every replica several times a second: a cheap way to learn that its
    in-memory routing snapshot is out of date, even where no notification reaches it."""

    __tablename__ = "routing_stamp"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)
