"""Adapters between data sources and the trials-table contract."""
