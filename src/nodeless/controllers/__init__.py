"""Workload controllers: each a client of the API, level-triggered through the
shared controller runtime in ``nodeless.client.controllers``."""
