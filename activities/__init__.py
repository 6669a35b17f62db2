"""Activities: carrier calls, database writes. Each method does one thing and returns."""
