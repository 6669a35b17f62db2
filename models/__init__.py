"""SQLModel tables and the pydantic payloads that cross Temporal."""
