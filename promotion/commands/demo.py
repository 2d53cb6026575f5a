"""``promotion demo``: the whole promotion cycle, for real, in a scratch workspace."""

from __future__ import annotations

HELP = "train three versions and take them through gates, canary, promotion, rollback and audit"


def add_arguments(parser) -> None:
    parser.add_argument("--workspace", help="an empty folder to work in (default: a new temp folder)")
    parser.add_argument("--topology", choices=("local", "envoy"), default="local",
                        help="local: two BentoML routers and an embedded registry (default); envoy: prod behind "
                             "Envoy with two replicas per version, MLflow on PostgreSQL with S3 artifacts, "
                             "Prometheus")


def run(args) -> int:
    from promotion.demo import main

    return main(args.workspace, args.topology)
