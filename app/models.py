"""Import every model so that `Base.metadata` is complete for Alembic and for tests."""

from app.auth.models import RefreshToken, User
from app.jobs.models import Job
from app.sessions.models import CodeSession
from app.submissions.models import Submission, SubmissionCase, SubmissionMetadata
from app.webhooks.models import Delivery

__all__ = [
    "CodeSession",
    "Delivery",
    "Job",
    "RefreshToken",
    "Submission",
    "SubmissionCase",
    "SubmissionMetadata",
    "User",
]
