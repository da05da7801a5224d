"""``chute render | deploy | delete | status``: added to the ``chute`` command by the plugin
(hook ``chute_add_commands``). Heavy imports happen when a command runs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


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


def register(subparsers: Subparsers) -> None:
    render = subparsers.add_parser(
        "render",
        help="print the Kubernetes objects of an API file as YAML",
        description="Print every Kubernetes object the APIs need (multi-document YAML, stable "
        "output): pipe it to kubectl apply -f - or keep it for kustomize.",
    )
    render.add_argument("api_file", metavar="API_FILE")
    _cluster_flag(render)
    render.set_defaults(run=run_render)

    deploy = subparsers.add_parser(
        "deploy",
        help="apply an API file to a cluster (server-side apply; prunes removed APIs)",
    )
    deploy.add_argument("api_file", metavar="API_FILE")
    _cluster_flag(deploy)
    _kube_flags(deploy)
    deploy.set_defaults(run=run_deploy)

    delete = subparsers.add_parser("delete", help="delete one API's objects from a cluster")
    delete.add_argument("api", metavar="API")
    _cluster_flag(delete)
    _kube_flags(delete)
    delete.set_defaults(run=run_delete)

    status = subparsers.add_parser(
        "status", help="replicas, ready pods and queue depth of each deployed API"
    )
    _cluster_flag(status)
    _kube_flags(status)
    status.add_argument(
        "--queue",
        metavar="URL",
        help="queue URL reachable from here (default: the cluster file's queue_url)",
    )
    status.set_defaults(run=run_status)


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

    objects, cluster = _render(args)
    assert isinstance(cluster, Cluster)
    kube = Kube.connect(kubeconfig=args.kubeconfig, context=args.context)
    try:
        deploy(objects, cluster, kube)
    finally:
        kube.close()
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from chute_k8s.cluster import load_cluster
    from chute_k8s.deploy import delete_api
    from chute_k8s.kube import Kube

    cluster = load_cluster(args.cluster)
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
    from chute_k8s.cluster import load_cluster
    from chute_k8s.deploy import format_status, status
    from chute_k8s.kube import Kube

    cluster = load_cluster(args.cluster)
    kube = Kube.connect(kubeconfig=args.kubeconfig, context=args.context)
    try:
        rows = status(cluster, kube, queue_url=args.queue)
    finally:
        kube.close()
    if not rows:
        print(f"no APIs deployed by chute in namespace {cluster.namespace!r}")
        return 0
    sys.stdout.write(format_status(rows))
    return 0
