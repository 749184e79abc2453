"""Test helpers that run outside the Django test runner as well as inside it."""
