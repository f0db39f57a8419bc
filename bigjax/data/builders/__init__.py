"""The project's own TFDS builders over data already on every machine."""
