"""Processors: the protocol, the registry of types, and the built-in types.

The implementation lives in private modules; import from here.
"""

from foldermon.processors._base import (
    Processor,
    ProcessorBuilder,
    ProcessorFactory,
    ProcessorSpec,
    SpecError,
    spec_from_table,
)
from foldermon.processors._registry import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    REGISTRY_PARAMETER,
    Registry,
)

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "REGISTRY_PARAMETER",
    "Processor",
    "ProcessorBuilder",
    "ProcessorFactory",
    "ProcessorSpec",
    "Registry",
    "SpecError",
    "spec_from_table",
]
