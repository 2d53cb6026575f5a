"""One module per subcommand; see :mod:`promotion.cli`."""
