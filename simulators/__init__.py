"""Faithful carrier simulators (Telna-like REST, Webbing-like SOAP) on one shared engine."""
