"""Import every model so that `Base.metadata` is complete for Alembic and for tests."""

from app.auth.models import RefreshToken, User
from app.jobs.models import Job

__all__ = ["Job", "RefreshToken", "User"]
