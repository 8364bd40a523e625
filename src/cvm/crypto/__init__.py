"""The one reviewed door to the sharp primitives: the only package that imports ``cryptography``."""
