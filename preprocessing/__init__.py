"""Converters: public datasets' original files -> the unified raw format (DESIGN.md §2).

Each module here that defines ``CONVERTER`` is registered automatically; see
:func:`converters` and ``usermirrorer preprocess --list``.
"""

from __future__ import annotations

from usermirrorer.preprocessing.base import (
    Converter,
    ConverterOption,
    ConvertReport,
    RuleCount,
    SourceProblems,
    cache_project,
    converters,
    ensure_raws,
    get_converter,
    locate_raws,
)

__all__ = [
    "Converter",
    "ConverterOption",
    "ConvertReport",
    "RuleCount",
    "SourceProblems",
    "cache_project",
    "converters",
    "ensure_raws",
    "get_converter",
    "locate_raws",
]
