"""Medians over rounds, the printed table, Redis's cost per request (the fleet view), the
targets of issues 12 and 6, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import Measurement

ROLES = ("client", "gateway", "dequeuer", "backend", "container", "celery", "floor")
#: Issue 12's "today": the last run before it (docs/performance.md), chute-redis on hypercorn.
BEFORE_SERIAL_P50_MS = 1.11
BEFORE_SQLITE_FLOOD_RPS = 662.0
BEFORE_SQLITE_OVER_CELERY = 662.0 / 790.0
#: The systems whose Redis cost per request the fleet view compares.
ON_REDIS = ("chute-redis", "celery-redis", "floor")


@dataclass
class Row:
    system: str
    scenario: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    commands_per_request: dict[str, float] = field(default_factory=dict)
    rss_before_mib: dict[str, float] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(
    system: str,
    scenario: str,
    rnd: int,
    latencies: list[float],
    m: Measurement,
    peaks: dict[str, float],
    before: dict[str, float],
) -> Row:
    n = len(latencies)
    return Row(
        system,
        scenario,
        rnd,
        n,
        round(m.seconds, 4),
        round(n / m.seconds, 1),
        round(percentile(latencies, 0.5) * 1000, 3),
        round(percentile(latencies, 0.99) * 1000, 3),
        {k: round(v * 1000 / n, 4) for k, v in m.cpu_s.items()},
        peaks,
        {k: round(v / n, 3) for k, v in sorted(m.commands.items(), key=lambda kv: -kv[1])},
        before,
    )


def medians(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    seen: list[tuple[str, str]] = []
    for r in rows:
        if (r.scenario, r.system) not in seen:
            seen.append((r.scenario, r.system))
    order = {s: i for i, s in enumerate(["flood", "fleet", "serial", "large", "idle", "poll"])}
    seen.sort(key=lambda k: order.get(k[0], 99))
    for scenario, system in seen:
        rs = [r for r in rows if (r.scenario, r.system) == (scenario, system)]

        def med(attr: str, rs: list[Row] = rs) -> dict[str, float]:
            keys = sorted({k for r in rs for k in getattr(r, attr)})
            return {
                k: round(statistics.median(getattr(r, attr).get(k, 0.0) for r in rs), 4)
                for k in keys
            }

        commands = med("commands_per_request")
        out.append(
            {
                "scenario": scenario,
                "system": system,
                "rounds": len(rs),
                "requests": rs[0].requests,
                "rps": round(statistics.median(r.rps for r in rs), 1),
                "p50_ms": round(statistics.median(r.p50_ms for r in rs), 3),
                "p99_ms": round(statistics.median(r.p99_ms for r in rs), 3),
                "cpu_ms_per_request": med("cpu_ms_per_request"),
                "peak_rss_mib": {
                    k: max(r.peak_rss_mib.get(k, 0.0) for r in rs)
                    for k in sorted({k for r in rs for k in r.peak_rss_mib})
                },
                "rss_before_mib": med("rss_before_mib"),
                "redis_commands_per_request": round(sum(commands.values()), 2),
                "redis_commands": commands,
            }
        )
    return out


def _cpu_cell(cpu: dict[str, float]) -> str:
    return " ".join(f"{k[:4]} {cpu[k]:.3f}" for k in ROLES if k in cpu) + "".join(
        f" {k} {v:.3f}" for k, v in cpu.items() if k not in ROLES
    )


def table(meds: list[dict[str, Any]]) -> str:
    out = [
        "| scenario | system | req/s | p50 ms | p99 ms | CPU ms/req by process | gw+dq CPU"
        " | peak RSS MiB gw/dq | Redis cmd/req |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for m in meds:
        cpu = m["cpu_ms_per_request"]
        gd = cpu.get("gateway", 0.0) + cpu.get("dequeuer", 0.0)
        rss = m["peak_rss_mib"]
        rss_cell = f"{rss['gateway']:.0f} / {rss['dequeuer']:.0f}" if rss else ""
        cmds = m["redis_commands_per_request"]
        out.append(
            f"| {m['scenario']} | {m['system']} | {m['rps']:.0f} | {m['p50_ms']:.2f} |"
            f" {m['p99_ms']:.2f} | {_cpu_cell(cpu)} | {f'{gd:.3f}' if rss else ''} |"
            f" {rss_cell} | {f'{cmds:.1f}' if cmds else ''} |"
        )
    return "\n".join(out)


def system_cpu_ms(m: dict[str, Any]) -> float:
    """CPU ms per request of every process of the system: all but the harness's client."""
    return float(sum(v for k, v in m["cpu_ms_per_request"].items() if k != "client"))


def redis_cost(meds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Redis CPU and commands per request in ``flood`` and ``fleet`` for the systems on Redis,
    and the requests/s one Redis could serve at that cost (1 / Redis seconds per request)."""
    out = []
    for m in meds:
        if m["scenario"] not in ("flood", "fleet") or m["system"] not in ON_REDIS:
            continue
        us = m["cpu_ms_per_request"].get("backend", 0.0) * 1000
        out.append(
            {
                "scenario": m["scenario"],
                "system": m["system"],
                "rps": m["rps"],
                "redis_us_per_request": round(us, 1),
                "redis_commands_per_request": m["redis_commands_per_request"],
                "one_redis_serves_rps": round(1e6 / us) if us else None,
            }
        )
    out.sort(key=lambda c: (c["scenario"], ON_REDIS.index(c["system"])))
    return out


def redis_table(costs: list[dict[str, Any]]) -> str:
    out = [
        "| scenario | system | req/s here | Redis µs/req | Redis cmd/req"
        " | one Redis serves req/s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in costs:
        serves = c["one_redis_serves_rps"]
        out.append(
            f"| {c['scenario']} | {c['system']} | {c['rps']:.0f} | {c['redis_us_per_request']:.0f}"
            f" | {c['redis_commands_per_request']:.1f} | {f'{serves:,}' if serves else ''} |"
        )
    return "\n".join(out)


def targets(
    meds: list[dict[str, Any]],
    soak: dict[str, Any] | None,
    before: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Issue 12's targets (then issue 6's), judged on chute-redis (the gateway's default
    server) in this run; "before" figures from ``before`` (the medians of a run of the code
    before issue 12, ``--before``) when given, else issue 12's figures from its last run."""
    by = {(m["scenario"], m["system"]): m for m in meds}
    then = {(m["scenario"], m["system"]): m for m in before or []}
    lines = []

    def get(scenario: str, system: str) -> dict[str, Any] | None:
        return by.get((scenario, system))

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    def backend_us(m: dict[str, Any]) -> float:
        return float(m["cpu_ms_per_request"].get("backend", 0.0)) * 1000

    redis, celery = get("flood", "chute-redis"), get("flood", "celery-redis")
    floor = get("flood", "floor")

    def by_cpu(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
        # The same comparison by CPU per request in the system (every process but the
        # harness's client): what the same cores would serve with nothing else running, which
        # the other sessions on a shared machine move far less than req/s.
        a, b = system_cpu_ms(ours), system_cpu_ms(theirs)
        return f" (by system CPU per request: {b:.3f} / {a:.3f} ms = {b / a:.2f}x)" if a else ""

    if redis and celery:
        ratio = redis["rps"] / celery["rps"]
        lines.append(
            f"flood ≥ 4x Celery prefork-8: {redis['rps']:.0f} vs {celery['rps']:.0f} req/s ="
            f" {ratio:.2f}x{by_cpu(redis, celery)} — {verdict(ratio >= 4)}"
        )
    if redis and floor:
        ratio = redis["rps"] / floor["rps"]
        lines.append(
            f"flood ≥ 0.6x the hand-written floor: {redis['rps']:.0f} vs {floor['rps']:.0f}"
            f" req/s = {ratio:.2f}x{by_cpu(redis, floor)} — {verdict(ratio >= 0.6)}"
        )
    if redis:
        cmds = redis["redis_commands_per_request"]
        lines.append(f"≤ 12 Redis commands per request (flood): {cmds:.1f} — {verdict(cmds <= 12)}")
    for scenario in ("flood", "fleet"):
        ours, theirs = get(scenario, "chute-redis"), get(scenario, "celery-redis")
        if ours and theirs:
            a, b = backend_us(ours), backend_us(theirs)
            lines.append(
                f"Redis µs per request ≤ Celery's ({scenario}): {a:.0f} vs {b:.0f} µs"
                f" (one Redis serves ~{1e6 / a:,.0f} vs ~{1e6 / b:,.0f} req/s)"
                f" — {verdict(a <= b)}"
                if a and b
                else f"Redis µs per request ({scenario}): not measured"
            )
    serial, direct = get("serial", "chute-redis"), get("serial", "direct")
    old_serial = then.get(("serial", "chute-redis+hypercorn"))  # before: hypercorn's default
    if serial:
        was = old_serial["p50_ms"] if old_serial else BEFORE_SERIAL_P50_MS
        # Within 10 %: serial p50 moves more than that between runs on a shared machine.
        lines.append(
            f"serial p50 no worse than before issue 12 ({was:.2f} ms"
            f"{' in the --before run' if old_serial else ''}, +10 % noise allowed):"
            f" {serial['p50_ms']:.2f} ms — {verdict(serial['p50_ms'] <= was * 1.1)}"
        )
    sqlite = get("flood", "chute-sqlite")
    old_sqlite = then.get(("flood", "chute-sqlite"))
    old_celery = then.get(("flood", "celery-redis"))
    if sqlite:
        was = old_sqlite["rps"] if old_sqlite else BEFORE_SQLITE_FLOOD_RPS
        ok = sqlite["rps"] >= 2 * was
        line = (
            f"SQLite flood ≥ 2x before ({was:.0f} req/s"
            f"{' in the --before run' if old_sqlite else ''}):"
            f" {sqlite['rps']:.0f} req/s = {sqlite['rps'] / was:.2f}x"
        )
        if celery:
            # The same ratio against Celery in each run, which machine noise moves less.
            was_over = (
                old_sqlite["rps"] / old_celery["rps"]
                if old_sqlite and old_celery
                else BEFORE_SQLITE_OVER_CELERY
            )
            rel = sqlite["rps"] / celery["rps"] / was_over
            line += f" (relative to Celery in each run: {rel:.2f}x)"
        lines.append(f"{line} — {verdict(ok)}")
    if serial and direct:
        added = serial["p50_ms"] - direct["p50_ms"]
        lines.append(
            f"(issue 6) serial p50 within 1.5 ms of direct: {serial['p50_ms']:.2f} vs"
            f" {direct['p50_ms']:.2f} ms = +{added:.2f} ms — {verdict(added <= 1.5)}"
        )
    if redis:
        cpu = redis["cpu_ms_per_request"]
        gd = cpu.get("gateway", 0) + cpu.get("dequeuer", 0)
        lines.append(
            f"(issue 6) gateway + dequeuer CPU < 0.5 ms/request (flood):"
            f" {cpu.get('gateway', 0):.3f} + {cpu.get('dequeuer', 0):.3f} = {gd:.3f} ms"
            f" — {verdict(gd < 0.5)}"
        )
    peaks: dict[str, float] = {}
    for m in meds:
        if m["peak_rss_mib"]:
            system = m["system"]
            peaks[system] = max(peaks.get(system, 0.0), m["peak_rss_mib"]["dequeuer"])
    if peaks:
        worst = max(peaks.values())
        cells = ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        lines.append(
            f"dequeuer peak RSS < 100 MiB on every backend: {cells} MiB — {verdict(worst < 100)}"
        )
    large = [m for m in meds if m["scenario"] == "large" and m["peak_rss_mib"]]
    if large:
        # Held whole = the process grew by the payload's size; half of it is the threshold.
        size = large[0].get("payload_mib", 100)
        growth = {
            m["system"]: {
                role: m["peak_rss_mib"][role] - m["rss_before_mib"].get(role, 0.0)
                for role in ("gateway", "dequeuer")
            }
            for m in large
        }
        worst = max(max(g.values()) for g in growth.values())
        cells = ", ".join(
            f"{system} +{g['gateway']:.0f}/+{g['dequeuer']:.0f}" for system, g in growth.items()
        )
        lines.append(
            f"(issue 6) large payload never held whole (RSS growth of gateway/dequeuer during"
            f" it): {cells} MiB — {verdict(worst < size / 2)}"
        )
    idle = get("idle", "chute-redis")
    if idle:
        lines.append(
            f"(issue 6) idle pick-up < 20 ms on Redis: p50 {idle['p50_ms']:.2f} ms (p99"
            f" {idle['p99_ms']:.2f}) — {verdict(idle['p50_ms'] < 20)}"
        )
    if soak:
        for system, s in soak.items():
            flat = all(
                s[role]["end"] <= s[role]["start"] * 1.1 + 5 for role in ("gateway", "dequeuer")
            )
            lines.append(
                f"memory flat over a {s['requests']}-request soak ({system}): "
                + ", ".join(
                    f"{role} start {s[role]['start']:.0f} peak {s[role]['peak']:.0f}"
                    f" end {s[role]['end']:.0f} MiB"
                    for role in ("gateway", "dequeuer")
                )
                + f" — {verdict(flat)}"
            )
    else:
        lines.append("memory flat over a soak: not run (pass --soak 100000)")
    return lines


def machine() -> dict[str, Any]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_json(
    path: Path,
    settings: dict[str, Any],
    rows: list[Row],
    meds: list[dict[str, Any]],
    extra: dict[str, Any],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "machine": machine(),
                "settings": settings,
                "medians": meds,
                "rounds": [asdict(r) for r in rows],
                **extra,
            },
            indent=2,
        )
    )
