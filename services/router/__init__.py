"""The BentoML router: one endpoint that serves champion, canary and shadow versions of any MLflow model.

- :mod:`services.router.service` - the BentoML service (``bentoml serve services.router.service:Router``)
- :mod:`services.router.routing` - routing state on disk, sticky bucketing, atomic persistence
- :mod:`services.router.worker` - per-worker apply/load/verify logic behind the HTTP layer
- :mod:`services.router.admin` - the admin endpoints over HTTP (token first, bounded body)
- :mod:`services.router.models` - fetch, verify and load a version through its pyfunc flavour
- :mod:`services.router.payload` - request bodies in MLflow's scoring formats, as columns
- :mod:`services.router.signature` - a version's input signature, checked per request
- :mod:`services.router.predictors` - how each kind of model is called (native model or pyfunc)
- :mod:`services.router.shadow` - mirroring to a shadow version in an idle-priority process
- :mod:`services.router.inference_log` - sampled request log (format: :mod:`promotion.contract.inference_log`)
- :mod:`services.router.process` - start/stop a service as a subprocess (:mod:`promotion.contract.launch`)

The service imports nothing of the ``promotion`` package but its contract
(:mod:`promotion.contract`) and the registry adapter (:mod:`promotion.registry`). See
``docs/service.md`` for the endpoints and configuration.
"""
