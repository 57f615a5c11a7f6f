"""Built-in plugin: serve (placeholder until its commands land)."""
