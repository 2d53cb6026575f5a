"""Start the real parts of a scale-out topology on one machine, on loopback, by PID.

The scale-out demo (``promotion demo --topology envoy``), the integration tests and the
benches start the same servers through this package: PostgreSQL, an S3 store and
``mlflow server`` (:mod:`.stores`), replicas of the router that each serve one version
(:mod:`.replicas`), a real Envoy in front of them (:mod:`.envoy`) and a Prometheus
scraping every replica (:mod:`.prometheus`). Each is the binary itself started with
``Popen`` (its PID is the server), each on free ports of 127.0.0.1, each stopped by that
PID (and its process group where it has workers), never by name::

    from promotion.topology.stores import registry_stack
    from promotion.topology.replicas import start_replicas

    with registry_stack("/tmp/stack") as stack:
        fleet = start_replicas(stack.tracking_uri, {1: digest}, count=2, root="/tmp/r", token="t")
        try:
            ...
        finally:
            fleet.stop()

The package starts the router by its command line (:func:`promotion.contract.launch.start_service`):
it never imports ``services/``. A part that cannot be found or does not come up raises
:class:`~promotion.topology.process.StartError` with the tail of its log.
"""
