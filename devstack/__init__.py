"""Laptop and test tooling, kept out of the product: embedded Valkey, the local cluster, ``run``.

``manage.py run`` and ``run-cluster`` import it inside the command, and tests/ and bench/
import it; ``qa_notify`` and ``workers`` never do, so a production process never loads it.
"""
