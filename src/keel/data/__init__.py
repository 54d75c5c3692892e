"""Reading, checking, splitting and preprocessing tables."""
