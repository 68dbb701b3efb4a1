"""User administration: the profile of the caller and admin-only account management."""
