"""kbindex: index a knowledge base into Chroma and search it."""

__version__ = "0.1.0"
