"""Progress on long work, as kubectl users expect: ``chute deploy --wait`` follows each API's
Deployment until its new pods are ready, and ``chute status --watch`` redraws the table as it
changes. Both poll the API server (every ``interval`` seconds) and print only changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chute.errors import WaitTimeout
from chute_k8s.kube import Kube

Obj = dict[str, Any]
Say = Callable[[str], None]


def progress(live: Obj | None) -> tuple[bool, str]:
    """Whether a Deployment finished rolling out, and a line saying where it is (the checks of
    ``kubectl rollout status``: the controller saw this generation, every replica is updated,
    available, and no old one is left)."""
    if live is None:
        return False, "not found"
    spec, status = live.get("spec", {}), live.get("status", {})
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    generation = live.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    total = int(status.get("replicas") or 0)
    line = f"{ready}/{wanted} ready, {updated} updated"
    if generation is not None and (observed is None or observed < generation):
        return False, f"{line} (waiting for the controller)"
    if updated < wanted or ready < wanted:
        return False, line
    if total > updated:
        return False, f"{line}, {total - updated} old pod(s) terminating"
    return True, f"{line}: rolled out"


def wait_for_rollout(
    deployments: list[Obj],
    kube: Kube,
    *,
    timeout: float,
    say: Say = print,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll each Deployment until it has rolled out; say each change of each one's progress.
    Raises WaitTimeout after ``timeout`` seconds naming those still rolling out."""
    deadline = clock() + timeout
    pending = {d["metadata"]["name"]: d for d in deployments}
    last: dict[str, str] = {}
    while True:
        for name, obj in list(pending.items()):
            meta = obj["metadata"]
            live = kube.get(obj["apiVersion"], "Deployment", meta["namespace"], name)
            done, line = progress(live)
            if last.get(name) != line:
                last[name] = line
                say(f"{name}: {line}")
            if done:
                del pending[name]
        if not pending:
            return
        if clock() >= deadline:
            raise WaitTimeout(
                f"not rolled out after {timeout:g} s: "
                + ", ".join(f"{name} ({last[name]})" for name in sorted(pending))
            )
        sleep(min(interval, max(deadline - clock(), 0.0)))
