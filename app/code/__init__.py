"""Synchronous runs (`POST /code/execute`): run now within the user's share, stored as a job."""
