"""PanDerm models: the ViT encoder, its factory and checkpoint I/O."""
