"""Request and response models of the HTTP API (Base / Create / Public split)."""
