"""Built-in plugin: survival (placeholder until its commands land)."""
