"""A local stand-in for the Google Drive v2 API calls pydrive2 makes (Drive cannot be reached here).

It serves, on 127.0.0.1: the OAuth token endpoint (refresh-token grant), files.list with the
``'<id>' in parents``, ``title = '<name>'`` and ``trashed = false`` query terms, folder creation,
resumable media uploads for insert and update, metadata and media GETs (with Range), and delete.
Requests without the access token it issued are refused with 401, like Drive.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FOLDER = "application/vnd.google-apps.folder"


class FakeDrive:
    def __init__(self, client_id: str, client_secret: str, refresh_token: str):
        self.creds = (client_id, client_secret, refresh_token)
        self.access_token = f"fake-access-{uuid.uuid4().hex}"
        self.files: dict[str, dict] = {"root-folder": {"id": "root-folder", "title": "run", "mimeType": FOLDER,
                                                       "parents": [], "labels": {"trashed": False}}}
        self.content: dict[str, bytes] = {}
        self.uploads: dict[str, dict] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def _handler(self):
        drive = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes | dict = b"", headers: dict | None = None) -> None:
                data = json.dumps(body).encode() if isinstance(body, dict) else body
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if isinstance(body, dict):
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {drive.access_token}":
                    self._send(401, {"error": {"code": 401, "message": "Invalid Credentials"}})
                    return False
                return True

            def _route(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                drive.requests.append(f"{method} {url.path}")
                if url.path == "/token":
                    form = dict(urllib.parse.parse_qsl(self._body().decode()))
                    ok = (form.get("grant_type") == "refresh_token" and form.get("refresh_token") == drive.creds[2]
                          and form.get("client_id") == drive.creds[0] and form.get("client_secret") == drive.creds[1])
                    if not ok:
                        return self._send(400, {"error": "invalid_grant"})
                    return self._send(200, {"access_token": drive.access_token, "expires_in": 3600,
                                            "token_type": "Bearer"})
                if not self._authorised():
                    return
                with drive.lock:
                    return self._api(method, url.path, query)

            def _api(self, method: str, path: str, query: dict) -> None:
                m = re.fullmatch(r"/(upload/)?drive/v2/files(?:/([^/]+))?", path)
                if not m:
                    return self._send(404, {"error": {"code": 404, "message": f"no route {path}"}})
                upload, file_id = m.group(1), m.group(2)
                if upload and "upload_id" in query:  # the content of a resumable upload
                    return self._finish_upload(query["upload_id"])
                if upload:  # start a resumable upload (insert: POST, update: PUT)
                    meta = json.loads(self._body() or b"{}")
                    up = uuid.uuid4().hex
                    drive.uploads[up] = {"file_id": file_id, "meta": meta}
                    loc = f"{drive.url}/upload/drive/v2/files?uploadType=resumable&upload_id={up}"
                    return self._send(200, b"", {"Location": loc})
                if method == "GET" and file_id is None:
                    return self._send(200, {"kind": "drive#fileList", "items": self._query(query.get("q", ""))})
                if method == "POST" and file_id is None:  # metadata only (folders)
                    return self._send(200, self._create(json.loads(self._body() or b"{}"), None))
                if file_id not in drive.files:
                    return self._send(404, {"error": {"code": 404, "message": f"File not found: {file_id}"}})
                if method == "GET" and query.get("alt") == "media":
                    data = drive.content.get(file_id, b"")
                    rng = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("range", "") or "")
                    lo, hi = (int(rng.group(1)), min(int(rng.group(2)), len(data) - 1)) if rng else (0, len(data) - 1)
                    return self._send(206, data[lo:hi + 1], {"Content-Range": f"bytes {lo}-{hi}/{len(data)}"})
                if method == "GET":
                    return self._send(200, drive.files[file_id])
                if method == "DELETE":
                    drive.files.pop(file_id)
                    drive.content.pop(file_id, None)
                    return self._send(204)
                return self._send(405, {"error": {"code": 405, "message": method}})

            def _query(self, q: str) -> list[dict]:
                parent = re.search(r"'((?:[^'\\]|\\.)*)' in parents", q)
                title = re.search(r"title = '((?:[^'\\]|\\.)*)'", q)
                unq = lambda s: re.sub(r"\\(.)", r"\1", s)  # noqa: E731
                out = []
                for f in drive.files.values():
                    if parent and unq(parent.group(1)) not in [p["id"] for p in f["parents"]]:
                        continue
                    if title and f["title"] != unq(title.group(1)):
                        continue
                    out.append(f)
                return out

            def _create(self, meta: dict, data: bytes | None) -> dict:
                fid = uuid.uuid4().hex[:16]
                f = {"id": fid, "title": meta.get("title", "untitled"),
                     "mimeType": meta.get("mimeType", "application/octet-stream"),
                     "parents": [{"id": p["id"]} for p in meta.get("parents", [])], "labels": {"trashed": False}}
                drive.files[fid] = f
                if data is not None:
                    drive.content[fid] = data
                    f["fileSize"] = str(len(data))
                return f

            def _finish_upload(self, upload_id: str) -> None:
                data = self._body()
                up = drive.uploads.pop(upload_id)
                if up["file_id"] is None:
                    return self._send(200, self._create(up["meta"], data))
                f = drive.files[up["file_id"]]
                f.update({k: v for k, v in up["meta"].items() if k in ("title", "mimeType")})
                drive.content[f["id"]] = data  # replaced only now that the whole upload arrived
                f["fileSize"] = str(len(data))
                return self._send(200, f)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_PUT(self):
                self._route("PUT")

            def do_DELETE(self):
                self._route("DELETE")

            def do_PATCH(self):
                self._route("PATCH")

        return Handler
