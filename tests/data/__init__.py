"""Test inputs built in code (no binary fixtures in the repository)."""
