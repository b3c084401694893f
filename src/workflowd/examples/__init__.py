"""Bundled example workflows, loaded by the default configuration."""

from workflowd.examples.audit_plan import audit

__all__ = ["audit"]
