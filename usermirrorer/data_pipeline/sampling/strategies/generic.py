"""The generic strategy, used for any dataset that has no strategy of its own."""

from usermirrorer.data_pipeline.sampling.strategies.base import GenericStrategy

__all__ = ["GenericStrategy"]
