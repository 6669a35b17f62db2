"""The HTTP API: operator and service endpoints, carrier webhooks, the dashboard."""
