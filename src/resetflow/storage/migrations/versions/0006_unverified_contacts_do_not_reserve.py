"""unverified contacts do not reserve

Only a verified email or phone is unique: a sign-up that never proved its address
no longer keeps the address's owner from signing up (issue 11, item 7). Several
accounts may hold the same address unverified; the first to verify it takes it
over (AccountService.verify_contact). Look-ups stay exact and indexed (R48). The
email becomes nullable: an account that loses an unverified email to its owner
keeps its verified phone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 20:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    names, unique_email, unique_phone = _unique_names()
    with op.batch_alter_table("users", schema=None, naming_convention=names) as batch_op:
        batch_op.drop_constraint(unique_email, type_="unique")
        batch_op.drop_constraint(unique_phone, type_="unique")
        batch_op.alter_column("email", existing_type=sa.String(length=254), nullable=True)
    _create_indexes()


def _unique_names() -> tuple[dict[str, str], str, str]:
    """The naming convention for batch mode, and the names of the two unique constraints.

    0001's have no name on SQLite: batch mode names them by this convention so that they
    can be dropped (the table is copied without them); downgrade() uses the same names.
    """
    if op.get_bind().dialect.name == "sqlite":
        return {"uq": "uq_%(table_name)s_%(column_0_name)s"}, "uq_users_email", "uq_users_phone"
    return {}, "users_email_key", "users_phone_key"


def _create_indexes() -> None:
    op.create_index("ix_users_email", "users", ["email"])
    op.create_index("ix_users_phone", "users", ["phone"])
    for column in ("email", "phone"):
        where = sa.text(f"{column}_verified_at IS NOT NULL")
        op.create_index(
            f"uq_users_{column}_verified",
            "users",
            [column],
            unique=True,
            sqlite_where=where,
            postgresql_where=where,
        )


def downgrade() -> None:
    for name in ("uq_users_phone_verified", "uq_users_email_verified"):
        op.drop_index(name, table_name="users")
    op.drop_index("ix_users_phone", table_name="users")
    op.drop_index("ix_users_email", table_name="users")
    # Fails where several accounts hold one address: delete the duplicates first.
    names, unique_email, unique_phone = _unique_names()
    with op.batch_alter_table("users", schema=None, naming_convention=names) as batch_op:
        batch_op.alter_column("email", existing_type=sa.String(length=254), nullable=False)
        batch_op.create_unique_constraint(unique_email, ["email"])
        batch_op.create_unique_constraint(unique_phone, ["phone"])
