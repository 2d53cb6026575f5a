"""``promotion serve <env>``: run the BentoML router for an environment, in the foreground.

The process becomes ``bentoml serve services.router.service:Router`` (``os.execvpe``: same
PID, signals go straight to BentoML), listening on the host and port of the environment's
``serving.endpoint``, with its state under ``.promotion/service/<env>`` unless
``--state-dir`` says otherwise.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlparse

from promotion.errors import UsageError
from promotion.config import file_key

HELP = "run the model-serving router for an environment (foreground; bentoml serve)"


def add_arguments(parser) -> None:
    parser.add_argument("env", help="environment name (environments/<env>.yaml)")
    parser.add_argument("--state-dir", default=None,
                        help="service state: routing.json, heartbeats, inference log, artifact cache "
                             "(default: .promotion/service/<env>)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("PROMOTION_WORKERS", "2")),
                        help="worker processes (default: $PROMOTION_WORKERS or 2)")
    parser.add_argument("--initial", action="store_true",
                        help="with no routing state yet, start serving the environment's model version at 100%%")
    parser.add_argument("--dry-run", action="store_true", help="print the command and environment, do not start")
    parser.add_argument("--envoy-bootstrap", metavar="PATH", default=None,
                        help="serving.kind envoy: write Envoy's bootstrap (and first route and cluster files) to "
                             "PATH and print the command that starts Envoy with it")


def run(args) -> int:
    from promotion._internal.paths import state_dir
    from promotion.commands._common import project
    from promotion.contract.launch import ROUTER, bentoml_command, service_env

    proj = project(args)
    env = proj.environment(args.env)
    if args.envoy_bootstrap or env.serving.kind != "bentoml":
        return _envoy(env, args)
    url = urlparse(env.endpoint)
    if not url.hostname:
        raise UsageError(f"{env.display}: serving.endpoint {env.endpoint!r} has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    state = args.state_dir or str(state_dir(proj.root) / "service" / file_key(env.name))
    from promotion.registry import Registry

    # $MLFLOW_TRACKING_URI wins over the file; the service inherits the registry credentials,
    # so they must belong to the registry it will use
    registry = Registry.for_root(proj.root, env.tracking_uri)
    registry.check_credentials()
    tracking_uri = registry.uri
    initial = None
    if args.initial:
        initial = json.dumps({"routes": {str(env.model.version): 100},
                              "digests": {str(env.model.version): env.model.digest}})
    child_env = service_env(state, tracking_uri, env.admin_token(), args.workers, env.model.name, initial,
                            routing_key_header=env.routing_key_header)
    if env.admin_token_env != "PROMOTION_ADMIN_TOKEN" and env.admin_token():
        child_env["PROMOTION_ADMIN_TOKEN"] = env.admin_token()
    cmd = bentoml_command(ROUTER, url.hostname, port)
    if args.dry_run:
        shown = {k: ("***" if k == "PROMOTION_ADMIN_TOKEN" else v) for k, v in sorted(child_env.items())
                 if k.startswith(("PROMOTION_", "MLFLOW_", "BENTOML_"))}
        print(" ".join(cmd))
        for k, v in shown.items():
            print(f"{k}={v}")
        return 0
    os.makedirs(state, exist_ok=True)
    os.chdir(child_env.get("PYTHONPATH", ".").split(os.pathsep)[0])
    os.execvpe(cmd[0], cmd, child_env)
    return 0  # not reached


def _envoy(env, args) -> int:
    """Envoy's bootstrap for an environment of kind envoy; each replica is started on its
    own (one version each), e.g. with ``promotion serve`` of a bentoml environment."""
    if env.serving.kind != "envoy" or not args.envoy_bootstrap:
        raise UsageError(f"{env.display}: serving.kind is {env.serving.kind!r}: `promotion serve` runs the BentoML "
                         "router only" + (" (for envoy, pass --envoy-bootstrap PATH)" if env.serving.kind == "envoy"
                                         else ""))
    from promotion.traffic.envoy import write_bootstrap

    path = write_bootstrap(env, os.path.abspath(args.envoy_bootstrap))
    print(f"envoy -c {path}")
    return 0
