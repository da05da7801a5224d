"""``chute render | deploy | delete | status``: added to the ``chute`` command by the plugin
(hook ``chute_add_commands``). Heavy imports happen when a command runs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from chute.cli import positive_seconds
from chute.cli._confirm import add_yes, confirm

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar


def _cluster_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        required=True,
        metavar="CLUSTER_FILE",
        help="the cluster file: namespace, images, backend URLs (docs/kubernetes.md)",
    )


def _kube_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, ~/.kube/config")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")


def register(commands: CommandRegistrar) -> None:
    render = commands.add(
        "render",
        run=run_render,
        help="print the Kubernetes objects of an API file as YAML",
        description="Print every Kubernetes object the APIs need (multi-document YAML, stable "
        "output): pipe it to kubectl apply -f - or keep it for kustomize.",
    )
    render.add_argument("api_file", metavar="API_FILE", help="the APIs' YAML file")
    _cluster_flag(render)

    deploy = commands.add(
        "deploy",
        run=run_deploy,
        help="apply an API file to a cluster (server-side apply; prunes removed APIs)",
        description="Render the APIs of API_FILE for the cluster file's namespace and apply "
        "every object with server-side apply (field manager chute), then delete what chute "
        "applied earlier that is no longer rendered (APIs removed from the file). With --wait, "
        "follow each API's rollout until its new pods are ready (as kubectl rollout status "
        "does); with --dry-run, only say what would be applied and pruned. See "
        "docs/kubernetes.md.",
    )
    deploy.add_argument("api_file", metavar="API_FILE", help="the APIs' YAML file")
    _cluster_flag(deploy)
    _kube_flags(deploy)
    deploy.add_argument(
        "--wait",
        action="store_true",
        help="after applying, follow each API's Deployment until it has rolled out",
    )
    deploy.add_argument(
        "--timeout",
        type=positive_seconds,
        default=300.0,
        metavar="SECONDS",
        help="with --wait: give up after this long, exit status 6 (default 300)",
    )
    deploy.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing: say what would be applied and pruned",
    )

    delete = commands.add(
        "delete",
        run=run_delete,
        help="delete one API's objects from a cluster",
        description="Delete every object chute applied for API (its Deployment, scaler and "
        "the rest) from the cluster file's namespace. Requests still queued stay in the queue. "
        "Asks for confirmation on a terminal; elsewhere it needs --yes.",
    )
    delete.add_argument("api", metavar="API", help="the API's name, as in the API file")
    _cluster_flag(delete)
    _kube_flags(delete)
    add_yes(delete)

    # core's `chute status` (each API's depth and rates, from the gateway) takes --cluster,
    # --watch and --interval; with --cluster it runs this (cluster_run), with these flags too.
    status = commands.parser("status")
    _kube_flags(status)
    status.add_argument(
        "--queue",
        metavar="URL",
        help="with --cluster: queue URL reachable from here (default: the cluster file's "
        "queue_url)",
    )
    status.set_defaults(cluster_run=run_status)


def _render(args: argparse.Namespace) -> tuple[list[dict[str, object]], object]:
    from chute.config import load_apis
    from chute_k8s.cluster import load_cluster
    from chute_k8s.render import render

    cluster = load_cluster(args.cluster)
    apis = load_apis(args.api_file)
    return render(apis, cluster, file=args.api_file), cluster


def run_render(args: argparse.Namespace) -> int:
    from chute_k8s.output import to_yaml

    objects, _ = _render(args)
    sys.stdout.write(to_yaml(objects))
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    from chute_k8s.cluster import Cluster
    from chute_k8s.deploy import deploy
    from chute_k8s.kube import Kube
    from chute_k8s.rollout import wait_for_rollout

    objects, cluster = _render(args)
    assert isinstance(cluster, Cluster)
    kube = Kube.connect(kubeconfig=args.kubeconfig, context=args.context)
    try:
        deploy(objects, cluster, kube, dry_run=args.dry_run)
        if args.wait and not args.dry_run:
            deployments = [obj for obj in objects if obj["kind"] == "Deployment"]
            wait_for_rollout(deployments, kube, timeout=args.timeout, say=_say)
    finally:
        kube.close()
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def run_delete(args: argparse.Namespace) -> int:
    from chute.cli._exit import USAGE
    from chute_k8s.cluster import load_cluster
    from chute_k8s.deploy import delete_api
    from chute_k8s.kube import Kube

    cluster = load_cluster(args.cluster)
    where = f"namespace {cluster.namespace!r}"
    if not confirm(args, f"delete API {args.api!r} and all its objects from {where}?"):
        return USAGE
    kube = Kube.connect(kubeconfig=args.kubeconfig, context=args.context)
    try:
        delete_api(args.api, cluster, kube)
    finally:
        kube.close()
    print(
        f"note: the gateway still routes {args.api!r} until it is removed from the API file "
        "and `chute deploy` runs again",
        file=sys.stderr,
    )
    return 0


def run_status(args: argparse.Namespace) -> int:
    from chute.cli import watch
    from chute_k8s.cluster import load_cluster
    from chute_k8s.deploy import format_status, status
    from chute_k8s.kube import Kube

    cluster = load_cluster(args.cluster)
    kube = Kube.connect(kubeconfig=args.kubeconfig, context=args.context)

    def table() -> str:
        rows = status(cluster, kube, queue_url=args.queue)
        if not rows:
            return f"no APIs deployed by chute in namespace {cluster.namespace!r}\n"
        return format_status(rows)

    try:
        if not args.watch:
            sys.stdout.write(table())
            return 0

        watch(table, interval=args.interval)  # until Ctrl-C, which ends it normally
    finally:
        kube.close()
    return 0
