"""Built-in plugin: segment (placeholder until its commands land)."""
