"""``promotion status <env>``: desired state, registry aliases, live routing, rollout phase."""

from __future__ import annotations

from promotion.commands._common import emit_json, project

HELP = "show what an environment should run (git), holds (registry) and serves (its traffic backend)"


def add_arguments(parser) -> None:
    parser.add_argument("env", help="environment name")
    parser.add_argument("--json", action="store_true")


def run(args) -> int:
    from promotion.errors import Error
    from promotion.registry import Registry
    from promotion.rollout.state import StateStore

    proj = project(args)
    env = proj.environment(args.env)
    out = {"env": env.name, "model": env.model.name, "desired": {"version": env.model.version, "digest": env.model.digest}}
    try:
        reg = Registry.for_root(proj.root, env.tracking_uri)
        out["alias"] = reg.alias(env.model.name, env.name)
        out["previous"] = reg.previous(env.model.name, env.name)
    except Error as exc:
        out["registry_error"] = exc.message
    try:
        from promotion.traffic import backend_for

        live = backend_for(env).current()
        out["routes"] = {str(k): v for k, v in live.weights.items()}
        out["generation"] = live.generation
        out["serving_kind"] = env.serving.kind
        if live.mirror is not None:
            out["mirror"] = live.mirror.to_json()
    except Error as exc:
        out["routing_error"] = exc.message
    saved = StateStore(proj.root, env.name).load()
    out["rollout"] = None if saved is None else {"id": saved.id, "phase": saved.phase.value, "canary": saved.canary,
                                                "champion": saved.champion, "weight": saved.weight, "reason": saved.reason}
    if args.json:
        emit_json(out)
    else:
        print(f"{env.name}: {env.model.name}")
        print(f"  desired (git)    v{env.model.version}  {env.model.digest[:19]}…")
        print(f"  alias (registry) {'v' + str(out['alias']) if out.get('alias') else out.get('registry_error', 'none')}"
              f"   previous: {'v' + str(out['previous']) if out.get('previous') else '-'}")
        routes = out.get("routes")
        print("  serving          " + (", ".join(f"v{k}={v:g}%" for k, v in routes.items()) if routes is not None
                                       else out.get("routing_error", "?")))
        r = out["rollout"]
        print("  last rollout     " + (f"{r['phase']} v{r['canary']} (champion v{r['champion']})" if r else "none"))
    in_sync = out.get("alias") == env.model.version and (out.get("routes") or {}).get(str(env.model.version)) == 100.0
    return 0 if in_sync else 1
