"""Workflows as data (API.md §11): JSON definitions, checked whole and compiled to the same
`Workflow` objects the engine runs; templates and conditions evaluated as data, never code."""

from workflowd.flows.compile import compile_definition, validate_definition
from workflowd.flows.model import DefinitionBody
from workflowd.flows.steps import Fetch, HttpStepError

__all__ = ["DefinitionBody", "Fetch", "HttpStepError", "compile_definition",
           "validate_definition"]
