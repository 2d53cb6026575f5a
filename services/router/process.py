"""Start and stop the router (or the plain baseline) as a child process.

The launcher belongs to the contract between the package and the service
(:mod:`promotion.contract.launch`); this module keeps the old import path for tests and
benches::

    from services.router.process import start_service, free_port, PLAIN
"""

from __future__ import annotations

from promotion.contract.launch import (PLAIN, REPO_ROOT, ROUTER, ServiceProcess, bentoml_command,  # noqa: F401
                                       free_port, service_env, start_service)
