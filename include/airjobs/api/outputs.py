"""``/jobs/v2/{jobId}/outputs`` (spec §8): listings of a job's output folder and downloads with ranges."""

from __future__ import annotations

from email.utils import formatdate
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Path, Request, Response
from fastapi.responses import StreamingResponse

from airjobs import outputs
from airjobs import representation as rep
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import AgaveRouter, Paging, ReadableJob, read
from airjobs.api.envelope import base_url, envelope, error
from airjobs.errors import BadRequest
from airjobs.transports import FileInfo

router = AgaveRouter(tags=["outputs"])

OutputPath = Annotated[str, Path(description="A path below the job's output folder")]


@router.get(
    "/jobs/v2/{jobId}/outputs/listings",
    **docs.operation(
        "listJobOutputs",
        "List the job's output folder (the archive once archived, else the work folder)",
        ok={200: m.OutputListResponse},
        errors=(404,),
        page=True,
    ),
)
async def list_outputs_root(request: Request, job: ReadableJob, page: Paging) -> Response:
    return await _listing(request, job, "", page.limit, page.offset)


@router.get(
    "/jobs/v2/{jobId}/outputs/listings/{path:path}",
    **docs.operation(
        "listJobOutputsAt",
        "List a folder (or show a file) below the job's output folder",
        ok={200: m.OutputListResponse},
        errors=(404,),
        page=True,
    ),
)
async def list_outputs(request: Request, job: ReadableJob, path: OutputPath, page: Paging) -> Response:
    return await _listing(request, job, path, page.limit, page.offset)


async def _listing(request: Request, job: Any, path: str, limit: int, offset: int) -> Response:
    def work() -> tuple[outputs.Location, list[tuple[str, FileInfo]]]:
        loc = outputs.locate(job)
        host, rel = outputs.resolve(loc, path)
        return loc, outputs.listing(loc, host, rel)[offset : offset + limit]

    loc, entries = await read(work)
    base = base_url(request)
    return envelope(request, [rep.file_json(job, p, info, loc.system["id"], base) for p, info in entries])


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema or {"type": "string"}}


FILE_HEADERS = {
    "Accept-Ranges": _header("bytes"),
    "Content-Length": _header("Bytes in this answer", {"type": "integer"}),
    "Last-Modified": _header("The file's modification time (HTTP date)"),
    "Content-Disposition": _header("attachment; filename*=UTF-8''<name>"),
}
FILE_BYTES = {
    "*/*": {
        "schema": {
            "description": "The file's bytes as stored; the media type is guessed from its "
            "name (application/octet-stream when unknown)"
        }
    }
}
DOWNLOAD = {
    200: {"description": "The whole file", "headers": FILE_HEADERS, "content": FILE_BYTES},
    206: {
        "description": "The first byte range the Range header asks for",
        "headers": {**FILE_HEADERS, "Content-Range": _header("bytes <first>-<last>/<size>")},
        "content": FILE_BYTES,
    },
}
RANGE = {
    "name": "Range",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "examples": ["bytes=0-99"]},
    "description": "One byte range (bytes=a-b, bytes=a-, bytes=-n); one that is not a byte range is ignored",
}


def _download_doc(operation_id: str, summary: str, head: bool) -> dict[str, Any]:
    ok = {code: {k: v for k, v in entry.items() if not (head and k == "content")} for code, entry in DOWNLOAD.items()}
    out = docs.operation(operation_id, summary, ok=ok, errors=(404, 416), envelope=False, query=[docs.PRETTY, RANGE])
    out["response_class"] = Response  # not JSON: the file's own media type
    return out


@router.get(
    "/jobs/v2/{jobId}/outputs/media/{path:path}",
    **_download_doc("downloadJobOutput", "Download an output file (Range supported)", head=False),
)
async def download_output(request: Request, job: ReadableJob, path: OutputPath) -> Response:
    return await _download(request, job, path)


@router.head(
    "/jobs/v2/{jobId}/outputs/media/{path:path}",
    **_download_doc("headJobOutput", "An output file's size, type and time (no body)", head=True),
)
async def head_output(request: Request, job: ReadableJob, path: OutputPath) -> Response:
    return await _download(request, job, path)


async def _download(request: Request, job: Any, path: str) -> Response:
    def work() -> tuple[outputs.Location, str, str, FileInfo]:
        loc = outputs.locate(job)
        host, rel = outputs.resolve(loc, path)
        return loc, host, rel, loc.transport.stat(host)

    loc, host, rel, info = await read(work)
    if info.is_dir:
        raise BadRequest(f"{rel} is a folder: list it with /jobs/v2/{job.id}/outputs/listings{rel}")
    try:
        span = outputs.parse_range(request.headers.get("range"), info.size)
    except outputs.RangeNotSatisfiable as e:
        return error(
            request, 416, e.message, headers={"Content-Range": f"bytes */{info.size}", "Accept-Ranges": "bytes"}
        )
    start, end = span if span else (0, info.size - 1)
    length = max(end - start + 1, 0)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(length),
        "Last-Modified": formatdate(info.mtime, usegmt=True),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(info.name)}",
        # bytes as they are on disk: the api-server's gzip layer would drop Content-Length and ranges
        "Content-Encoding": "identity",
    }
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    status = 206 if span else 200
    media = rep.mime_type(info.name)
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=headers, media_type=media)
    return StreamingResponse(
        outputs.read_range(loc, host, start, end), status_code=status, headers=headers, media_type=media
    )
