"""Files ``promotion init`` writes into a new promotion repository (package data).

One place for all of them: ``environment.yaml`` (rendered per environment), the policies
per task (``policies/classification/``, ``policies/regression/``), the GitHub workflows
(``workflows/``, copies of this repository's), ``CODEOWNERS``, ``trust.yaml``,
``README.md``, ``Makefile``, ``requirements.txt`` and ``gitignore``. ``{{model}}``,
``{{environment}}``, ``{{port}}`` and ``{{task}}`` are filled in; nothing else is
touched (the workflows' ``${{ }}`` expressions stay as they are).
"""
