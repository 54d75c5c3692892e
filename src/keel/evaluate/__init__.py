"""Metrics and their presentation; works on arrays and imports no other stage."""
