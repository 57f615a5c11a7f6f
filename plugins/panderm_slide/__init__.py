"""Built-in plugin: slide (placeholder until its commands land)."""
