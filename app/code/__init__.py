"""Synchronous code execution."""
