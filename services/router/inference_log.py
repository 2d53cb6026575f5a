"""The sampled inference log, as the service writes it.

The row format, the writer and the reader are part of the contract between the package
and the service (:mod:`promotion.contract.inference_log`); this module keeps the
service's import path::

    from services.router.inference_log import InferenceLog, read_inference_log
"""

from __future__ import annotations

from promotion.contract.inference_log import (DEFAULT_MAX_BYTES, InferenceLog, directory,  # noqa: F401
                                              read_inference_log, row)
