"""The operator dashboard at ``/``: server-rendered pages over the same database, carriers
and Temporal client as the API (see ``routes``)."""
