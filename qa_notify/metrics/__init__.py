"""Prometheus metrics that add up across a machine's processes.

``machine``: the directory where every process of one machine (web processes, Celery
workers and their children) keeps its figures; ``instruments``: what the processes count
and time. ``qa_notify.health.exposition`` reads the whole machine's figures back for
``/metrics`` and the admin's live page. Importing this package imports nothing: prometheus_client must only be
imported once ``machine.join`` has named the directory (it picks its storage at import).
"""
