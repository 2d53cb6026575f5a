"""The registry at scale for tests: PostgreSQL, an S3 store (SeaweedFS) and ``mlflow server``.

The launchers live in the package (:mod:`promotion.topology.stores`), shared with the
scale-out demo; this module re-exports them for the tests::

    with registry_stack(tmp_dir) as stack:
        reg = Registry(stack.tracking_uri, root)
"""

from __future__ import annotations

from promotion.topology.stores import (  # noqa: F401 - re-exported
    ARTIFACT_PREFIX, BUCKET, PG_BIN, Postgres, S3Store, Stack, StoreError, registry_stack, start_mlflow_server,
    start_postgres, start_registry_stack, start_s3, weed_binary)
from promotion.topology.process import Proc  # noqa: F401
