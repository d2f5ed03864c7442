"""Built-in plugin pack."""
