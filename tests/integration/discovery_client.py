"""A generic client of a Google-discovery-described API, generated at run time from the document the server
publishes (``/fleet/v1/discovery``): each resource is an attribute, each of its methods a callable taking the
method's parameters by name (path parameters substituted into its path, query parameters in the query
string) and ``body`` for a method with a request. Nothing in it knows fleet's methods: tests drive the API
only through what the document describes.

The transport is HTTP/1.1 over a unix socket (``http.client`` on an ``AF_UNIX`` socket).
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Reply", "UnixHTTP", "generate"]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # decoded JSON, or None for an empty body
    headers: Mapping[str, str]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("fleet", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


@dataclass(frozen=True)
class UnixHTTP:
    """One request per connection to the server on ``path``."""

    path: str
    timeout: float = 60.0

    def request(self, method: str, target: str, body: Any = None, headers: Mapping[str, str] = {}) -> Reply:
        connection = _UnixConnection(self.path, self.timeout)
        try:
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json", **headers} if data is not None else dict(headers)
            connection.request(method, target, body=data, headers=sent)
            response = connection.getresponse()
            raw = response.read()
            decoded = json.loads(raw) if raw and "json" in response.getheader("Content-Type", "") else None
            if decoded is None and raw:
                decoded = raw.decode()
            return Reply(response.status, decoded, dict(response.getheaders()))
        finally:
            connection.close()


class _Resource:
    def __init__(self, name: str) -> None:
        self.name = name


def _method(http: UnixHTTP, base: str, spec: Mapping[str, Any]) -> Callable[..., Reply]:
    parameters: Mapping[str, Mapping[str, Any]] = spec.get("parameters", {})

    def call(body: Any = None, **arguments: str) -> Reply:
        unknown = set(arguments) - set(parameters)
        if unknown:
            raise TypeError(f"{spec['id']}: unknown parameters {sorted(unknown)}")
        path = spec["path"]
        query = {}
        for name, parameter in parameters.items():
            if parameter.get("location") == "path":
                if name not in arguments:
                    raise TypeError(f"{spec['id']}: missing path parameter {name}")
                path = path.replace("{" + name + "}", urllib.parse.quote(arguments[name], safe=""))
            elif name in arguments:
                query[name] = arguments[name]
        if body is not None and "request" not in spec:
            raise TypeError(f"{spec['id']} takes no request body")
        target = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        return http.request(spec["httpMethod"], target, body)

    call.__name__ = spec["id"]
    return call


def generate(http: UnixHTTP, discovery_path: str) -> Any:
    """The client described by the discovery document at ``discovery_path`` on ``http``."""
    reply = http.request("GET", discovery_path)
    if reply.status != 200:
        raise RuntimeError(f"discovery document: HTTP {reply.status}")
    document = reply.body
    client = _Resource(document["id"])
    for resource_name, resource in document["resources"].items():
        namespace = _Resource(resource_name)
        for method_name, spec in resource["methods"].items():
            setattr(namespace, method_name, _method(http, document["basePath"], spec))
        setattr(client, resource_name, namespace)
    client.document = document  # type: ignore[attr-defined]
    return client
