"""The served OpenAPI document (issue 12): valid OpenAPI 3.1, every served route and method in it and nothing
else, unique operation ids, a schema for every request body and response, the bearer scheme, the common query
parameters, and links from a submitted job to its other operations. Built on a trivial Backend: no database,
no Airflow."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource

from airjobs.api.app import Backend, User, create_app
from airjobs.api.throttle import LoginThrottle
from airjobs.errors import Unauthorized

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
BODYLESS = {"cancelJob", "rotateWebhookSecret", "hideJob", "unhideJob"}  # POST operations that take no body
UNAUTHENTICATED = {"/token", "/revoke"}
SSE = ("/jobs/v2/events", "/jobs/v2/{jobId}/events")  # 204: nothing more to stream
NO_ENVELOPE = {"/token", "/revoke", "/jobs/v2/events", "/jobs/v2/{jobId}/events"}  # OAuth2, SSE
LISTINGS = {
    "listJobs",
    "searchJobsByAttribute",
    "getJobHistory",
    "listJobOutputs",
    "listJobOutputsAt",
    "listJobPermissions",
    "listNotifications",
    "listNotificationAttempts",
}


class TrivialBackend:
    """Knows one token ("letmein", user alice) and permits nothing."""

    async def authenticate(self, token: str) -> User:
        if token != "letmein":
            raise Unauthorized("Invalid bearer token.")
        return User("alice")

    def login(self, username: str, password: str) -> dict[str, Any]:
        raise Unauthorized("Invalid user name or password.")

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        raise Unauthorized("Invalid or expired refresh token.")

    def revoke(self, token: str) -> None:
        return None

    def authorize(self, user: User, method: str, resource: str) -> bool:
        return False

    def launch(self, job: Any) -> None:
        raise AssertionError("not in these tests")

    def connection_extra(self, conn_id: str) -> dict[str, Any] | None:
        return None

    def user_exists(self, username: str) -> str | None:
        return None

    def delete_connection(self, conn_id: str) -> None:
        return None

    def put_connection(
        self,
        conn_id: str,
        conn_type: str,
        host: str,
        port: int,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
    ) -> None:
        return None


@pytest.fixture(scope="module")
def app():
    backend: Backend = TrivialBackend()
    return create_app(backend, LoginThrottle())


@pytest.fixture(scope="module")
def doc(app) -> dict[str, Any]:
    with TestClient(app) as c:
        r = c.get("/jobs/v2/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()


def _operations(doc: dict[str, Any]):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def test_the_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_served_route_and_method_is_documented_and_nothing_else(app, doc):
    served, aliases = set(), set()
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue  # the document and its docs page themselves
        for method in route.methods:
            key = (route.path_format, method.lower())
            (served if route.include_in_schema else aliases).add(key)
    documented = {(path, method) for path, method, _ in _operations(doc)}
    assert served == documented
    # a route left out of the document is only ever the trailing-slash alias of a documented one
    assert all(path.endswith("/") and (path[:-1], method) in documented for path, method in aliases), aliases
    assert len(documented) >= 30


def test_operation_ids_are_unique(doc):
    ids = [op.get("operationId") for _, _, op in _operations(doc)]
    assert all(ids) and len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_response_and_request_body_has_a_schema(doc):
    for path, method, op in _operations(doc):
        where = f"{method.upper()} {path}"
        assert op.get("responses"), where
        assert "422" not in op["responses"], where  # validation errors are Agave 400s
        for code, response in op["responses"].items():
            content = response.get("content")
            if content is None:
                # no body: HEAD, and the empty 200 of /revoke (RFC 7009)
                assert method == "head" or (path, code) in (("/revoke", "200"), *((p, "204") for p in SSE)), (
                    f"{where} {code}"
                )
                continue
            for media, entry in content.items():
                assert entry.get("schema"), f"{where} {code} {media}"
        if method in ("post", "put") and op["operationId"] not in BODYLESS:
            body = op.get("requestBody")
            assert body and body.get("content"), where
            for media, entry in body["content"].items():
                assert entry.get("schema"), f"{where} body {media}"
        else:
            assert "requestBody" not in op, where


def test_request_bodies_take_json_forms_and_uploads_where_the_service_does(doc):
    content = doc["paths"]["/jobs/v2"]["post"]["requestBody"]["content"]  # D3
    assert {"application/json", "application/x-www-form-urlencoded", "multipart/form-data"} <= set(content)
    upload = content["multipart/form-data"]["schema"]
    upload = _resolve(doc, upload)
    assert "fileToUpload" in upload["properties"]
    for path in ("/token", "/revoke"):
        assert {"application/json", "application/x-www-form-urlencoded"} <= set(
            doc["paths"][path]["post"]["requestBody"]["content"]
        )
    for path, method in (
        ("/apps/v2", "post"),
        ("/systems/v2", "post"),
        ("/apps/v2/{appId}", "put"),
        ("/systems/v2/{systemId}", "put"),
    ):
        assert {"application/json", "multipart/form-data"} <= set(doc["paths"][path][method]["requestBody"]["content"])


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def test_bearer_security_on_every_operation_but_login(doc):
    schemes = doc["components"]["securitySchemes"]
    bearer = [
        name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme", "").lower() == "bearer"
    ]
    assert len(bearer) == 1
    for path, method, op in _operations(doc):
        if path in UNAUTHENTICATED:
            assert not op.get("security"), path
        else:
            assert op.get("security") == [{bearer[0]: []}], f"{method} {path}"
            assert "401" in op["responses"] and "403" in op["responses"], f"{method} {path}"


def test_common_query_parameters(doc):
    for path, method, op in _operations(doc):
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        if path in NO_ENVELOPE:
            assert not names & {"pretty", "naked", "filter"}, path
        elif "/outputs/media/" in path:
            assert "pretty" in names, path  # errors are pretty-printed; the file is the file
        else:
            assert {"pretty", "naked", "filter"} <= names, f"{method} {path}"
        assert ({"limit", "offset"} <= names) == (op["operationId"] in LISTINGS), f"{method} {path}"


def test_submission_links_to_the_job_and_201s_say_where(doc):
    ids = {op["operationId"] for _, _, op in _operations(doc)}
    submit = doc["paths"]["/jobs/v2"]["post"]["responses"]
    assert {"201", "200"} <= set(submit)
    links = submit["201"]["links"]
    targets = {link["operationId"] for link in links.values()}
    assert {"getJob", "getJobStatus", "getJobHistory", "cancelJob"} <= targets
    assert targets <= ids
    assert all(link["parameters"]["jobId"] == "$response.body#/result/id" for link in links.values())
    for path, _method, op in _operations(doc):
        if "201" in op["responses"] and op["operationId"] in ("submitJob", "registerApp", "registerSystem"):
            assert op["responses"]["201"]["headers"]["Location"]["schema"], path


def test_download_has_distinct_get_and_head_operations_and_ranges(doc):
    item = doc["paths"]["/jobs/v2/{jobId}/outputs/media/{path}"]
    assert item["get"]["operationId"] != item["head"]["operationId"]
    for method in ("get", "head"):
        assert {"200", "206", "416"} <= set(item[method]["responses"])
        assert "Content-Range" in item[method]["responses"]["206"]["headers"]


def _check(doc: dict[str, Any], path: str, method: str, response) -> None:
    """The response conforms to what the document says for its status code."""
    responses = doc["paths"][path][method]["responses"]
    code = str(response.status_code)
    entry = responses.get(code) or responses.get(f"{code[0]}XX")
    assert entry is not None, f"{method} {path} {code} is not documented"
    media = response.headers["content-type"].split(";")[0]
    schema = entry["content"].get(media) or entry["content"]["*/*"]
    registry = Registry().with_resource("urn:openapi", Resource.opaque(doc))
    ref = {
        "$ref": "urn:openapi#/paths/"
        + path.replace("~", "~0").replace("/", "~1")
        + f"/{method}/responses/{code if code in responses else code[0] + 'XX'}/content/"
        + media.replace("/", "~1")
        + "/schema"
    }
    assert schema
    Draft202012Validator(ref, registry=registry).validate(response.json())
    for name, header in entry.get("headers", {}).items():
        if header.get("required"):
            assert name.lower() in response.headers, f"{method} {path} {code}: no {name}"


@pytest.mark.parametrize("query", ["", "?naked=true", "?pretty=true", "?filter=id,status"])
def test_errors_sent_conform_to_the_document(app, doc, query):
    with TestClient(app) as c:
        _check(doc, "/jobs/v2", "get", c.get("/jobs/v2" + query))  # 401: no token
        _check(doc, "/jobs/v2/{jobId}", "get", c.get("/jobs/v2/x" + query, headers={"Authorization": "Bearer no"}))
        _check(
            doc, "/jobs/v2", "post", c.post("/jobs/v2" + query, json={}, headers={"Authorization": "Bearer letmein"})
        )
        _check(doc, "/token", "post", c.post("/token", data={"grant_type": "nonsense"}))  # 400
        _check(doc, "/token", "post", c.post("/token", data={"grant_type": "password"}))  # 400
        _check(doc, "/token", "post", c.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x"}))
        _check(doc, "/revoke", "post", c.post("/revoke", json={}))  # 400


def _reachable(doc: dict[str, Any], schema: Any, seen: set[str]):
    """Every schema object reachable from ``schema`` (through $ref, properties, items, anyOf, ...)."""
    if isinstance(schema, list):
        for s in schema:
            yield from _reachable(doc, s, seen)
        return
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        if schema["$ref"] in seen:
            return
        seen.add(schema["$ref"])
        schema = _resolve(doc, schema)
    yield schema
    for key in ("properties", "$defs"):
        for sub in (schema.get(key) or {}).values():
            yield from _reachable(doc, sub, seen)
    for key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
        if key in schema:
            yield from _reachable(doc, schema[key], seen)


def test_filter_and_naked_answers_conform_result_objects_require_nothing(doc):
    """``filter`` may drop any field at any depth and ``naked`` sends the bare result: every success answer is
    an envelope or its bare result, and no object of a result requires a field."""
    for path, method, op in _operations(doc):
        if path in NO_ENVELOPE:
            continue
        for code, response in op["responses"].items():
            if not code.startswith("2") or "application/json" not in response.get("content", {}):
                continue
            schema = response["content"]["application/json"]["schema"]
            envelope, bare = schema["anyOf"]
            envelope = _resolve(doc, envelope)
            assert set(envelope["required"]) == {"status", "message", "version", "result"}, f"{method} {path}"
            result = {k: v for k, v in envelope["properties"]["result"].items() if k != "title"}
            assert result == {k: v for k, v in bare.items() if k != "title"}, f"{method} {path} {code}"
            for sub in _reachable(doc, bare, set()):
                assert not sub.get("required"), f"{method} {path} {code}: {sub.get('title')} requires fields"


@pytest.mark.parametrize(
    ("method", "path", "documented", "allow"),
    [
        ("TRACE", "/systems/v2", "/systems/v2", "GET, POST"),
        ("PATCH", "/jobs/v2/x/pems/bob", "/jobs/v2/{jobId}/pems/{username}", "DELETE, GET, POST, PUT"),
        ("GET", "/token", "/token", "POST"),
        ("POST", "/jobs/v2/x/outputs/media/a/b", "/jobs/v2/{jobId}/outputs/media/{path}", "GET, HEAD"),
    ],
)
def test_a_405_names_every_method_of_the_path(app, doc, method, path, documented, allow):
    with TestClient(app) as c:
        r = c.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json()["status"] == "error"
    for op in doc["paths"][documented].values():
        assert op["responses"]["405"]["headers"]["Allow"]["required"]
