"""Bundled example workflows, loaded by the default configuration: `audit-plan`, the
`document-pipeline`, and the step functions of the README's jobs flow (`count_words`,
`write_report`)."""

from workflowd.examples import jobs
from workflowd.examples.audit_plan import audit
from workflowd.examples.document_pipeline import pipeline

__all__ = ["audit", "jobs", "pipeline"]
