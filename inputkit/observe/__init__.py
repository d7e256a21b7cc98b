"""Observability: statistics, the windowed metrics, the diagnosis, the dashboard, plots.

Everything here reads snapshots of the pipeline; nothing here is on the data path.
"""
