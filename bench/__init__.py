"""qa_notify benchmarks: ``make bench`` (``python -m bench``); results in docs/benchmarks.md."""
