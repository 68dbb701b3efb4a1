"""Graded submissions: one program run against many test cases, each case a fresh run, with a
verdict per case and for the whole (issue 12)."""
