"""Helpers shared by the test suites (a real server-stub process, payload builders)."""
