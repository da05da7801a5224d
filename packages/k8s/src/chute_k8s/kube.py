"""A thin client for what ``chute deploy``, ``delete`` and ``status`` do on the API server:
server-side apply, get, list by label and delete, on any kind, found by API discovery.

Built on the official ``kubernetes`` client's ApiClient (configuration, authentication, TLS);
bodies are encoded and decoded with msgspec. Errors become :class:`~chute.errors.ChuteError`
with the object and the server's message.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from chute.errors import BackendUnavailable, ChuteError, ConfigError, NotFound

Obj = dict[str, Any]


class KubeError(ChuteError):
    """The API server refused a request."""


class Kind(msgspec.Struct, frozen=True):
    api_version: str
    kind: str
    plural: str
    namespaced: bool


class _Resource(msgspec.Struct):
    name: str
    kind: str
    namespaced: bool


class _ResourceList(msgspec.Struct):
    resources: list[_Resource] = []


class _Status(msgspec.Struct):
    message: str = ""
    reason: str = ""


class Kube:
    """One connection to an API server."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self._kinds: dict[str, dict[str, Kind] | None] = {}

    @classmethod
    def connect(cls, *, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """From a kubeconfig (``$KUBECONFIG``, ``~/.kube/config``), else the in-cluster service
        account."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (config.ConfigException, FileNotFoundError, OSError) as exc:
            if kubeconfig is not None or context is not None:
                raise ConfigError(f"cannot load the kubeconfig: {exc}") from None
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
            except config.ConfigException:
                raise ConfigError(
                    f"no cluster to talk to: {exc}; pass --kubeconfig or set KUBECONFIG"
                ) from None
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()

    # --- raw requests -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: str | Obj | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; returns the decoded JSON answer; NotFound on 404. ``body`` is a dict
        for JSON, or text sent as it is (the apply content type)."""
        from kubernetes.client.exceptions import ApiException

        client = self.api_client
        method, url, headers, body, _ = client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = client.call_api(method, url, header_params=headers, body=body)
            response.read()
        except ApiException as exc:
            raise self._error(method, path, exc.status or 0, exc.body) from None
        except Exception as exc:  # urllib3: the server is not there
            raise BackendUnavailable(f"cannot reach the Kubernetes API server: {exc}") from exc
        if not 200 <= response.status < 300:
            raise self._error(method, path, response.status, response.data)
        return msgspec.json.decode(response.data) if response.data else None

    @staticmethod
    def _error(method: str, path: str, status: int, data: bytes | str | None) -> ChuteError:
        message = ""
        try:
            message = msgspec.json.decode(data or b"{}", type=_Status).message
        except msgspec.DecodeError:
            message = (data.decode() if isinstance(data, bytes) else data or "")[:500]
        text = f"{method} {path}: {status} {message}".rstrip()
        return NotFound(text) if status == 404 else KubeError(text)

    # --- discovery --------------------------------------------------------------------------

    def kind(self, api_version: str, kind: str) -> Kind | None:
        """The resource of ``kind`` in ``api_version``, or None when the server has no such
        kind (e.g. KEDA's CRDs are not installed)."""
        if api_version not in self._kinds:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                found = msgspec.convert(self.request("GET", base), _ResourceList)
            except NotFound:
                self._kinds[api_version] = None
            else:
                self._kinds[api_version] = {
                    r.kind: Kind(api_version, r.kind, r.name, r.namespaced)
                    for r in found.resources
                    if "/" not in r.name  # subresources (deployments/scale)
                }
        kinds = self._kinds[api_version]
        return None if kinds is None else kinds.get(kind)

    def require(self, api_version: str, kind: str) -> Kind:
        found = self.kind(api_version, kind)
        if found is None:
            hint = ""
            if api_version.startswith("keda.sh/"):
                hint = "; install KEDA first (docs/kubernetes.md)"
            elif api_version.startswith("monitoring.coreos.com/"):
                hint = (
                    "; install the Prometheus operator, or turn off observability.monitors "
                    "and observability.alerts in the cluster file"
                )
            raise ConfigError(f"the cluster has no {kind} ({api_version}){hint}")
        return found

    @staticmethod
    def path(kind: Kind, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
        if kind.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{kind.plural}"
        return base + (f"/{quote(name)}" if name else "")

    # --- verbs ------------------------------------------------------------------------------

    def apply(self, obj: Obj, *, field_manager: str) -> Obj:
        """Server-side apply: the server merges, ``field_manager`` owns what it sets; conflicts
        with other managers are forced (chute's file is the truth for the fields it sets)."""
        kind = self.require(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        path = self.path(kind, meta.get("namespace"), meta["name"])
        answer: Obj = self.request(
            "PATCH",
            path,
            query={"fieldManager": field_manager, "force": "true"},
            body=msgspec.json.encode(obj).decode(),  # JSON is YAML: apply takes it as it is
            content_type="application/apply-patch+yaml",
        )
        return answer

    def get(self, api_version: str, kind_name: str, namespace: str, name: str) -> Obj | None:
        kind = self.kind(api_version, kind_name)
        if kind is None:
            return None
        try:
            found: Obj = self.request("GET", self.path(kind, namespace, name))
        except NotFound:
            return None
        return found

    def list(self, api_version: str, kind_name: str, namespace: str, selector: str) -> list[Obj]:
        """Objects of a kind matching a label selector; [] when the server lacks the kind."""
        kind = self.kind(api_version, kind_name)
        if kind is None:
            return []
        answer = self.request("GET", self.path(kind, namespace), query={"labelSelector": selector})
        items: list[Obj] = answer.get("items", [])
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind_name)
        return items

    def delete(self, api_version: str, kind_name: str, namespace: str, name: str) -> bool:
        """Delete one object (its pods and ReplicaSets follow in the background); False when
        it was not there."""
        kind = self.kind(api_version, kind_name)
        if kind is None:
            return False
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", self.path(kind, namespace, name), body=body)
        except NotFound:
            return False
        return True
