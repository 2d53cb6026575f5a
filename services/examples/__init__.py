"""Example models registered through :func:`promotion.register` (nothing in the product uses them)."""
