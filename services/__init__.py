"""The product's work beside its activities: what the API, the worker, ``starter.py`` and
the activities share over the carriers and the database (the catalogue sync, the audit's
rules and reads), and the worker process's metrics and notifications."""
