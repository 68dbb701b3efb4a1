"""Sandbox images: one folder per language on top of an offline-built Debian base."""
