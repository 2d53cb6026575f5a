"""Serving side of the project: the example fraud model and the BentoML router."""
