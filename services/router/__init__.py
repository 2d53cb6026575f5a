"""The BentoML router: one endpoint that serves champion, canary and shadow model versions.

- :mod:`services.router.service` - the BentoML service (``bentoml serve services.router.service:Router``)
- :mod:`services.router.routing` - routing state, validation, sticky bucketing, atomic persistence
- :mod:`services.router.worker` - per-worker apply/load/verify logic behind the HTTP layer
- :mod:`services.router.inference_log` - sampled request log and :func:`read_inference_log`
- :mod:`services.router.process` - start/stop a service as a subprocess (tests, demo, benches)

See ``docs/service.md`` for the endpoints and configuration.
"""
