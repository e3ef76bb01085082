"""Google Drive through pydrive2 (the design's Kaggle route), authenticated headlessly.

``LocalWebserverAuth()`` needs a browser and cannot run in a scheduled Kaggle session. Instead, an
OAuth client (id + secret) and a refresh token, made once on a laptop (README, "On Kaggle"), come
from Kaggle Secrets; pydrive2 refreshes access tokens from them on its own.

Drive may hold several files with one name in a folder; this backend keeps one per name and
replaces content by uploading a new revision of that file, which Drive makes visible only once the
upload completes (atomic). Keys with ``/`` map to sub-folders.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from tinytribe.sync.remotes import Remote, RemoteError

FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def drive_from_refresh_token(client_id: str, client_secret: str, refresh_token: str, *,
                             token_uri: str = GOOGLE_TOKEN_URI, api_root: str | None = None):
    """A pydrive2 ``GoogleDrive`` authorised with a refresh token, no browser involved.

    Args:
        api_root: serve the Drive API from another root URL (a proxy, or the tests' local stand-in);
            None for Google's.
    """
    try:
        from oauth2client.client import OAuth2Credentials
        from pydrive2.auth import GoogleAuth
        from pydrive2.drive import GoogleDrive
    except ImportError:
        raise ImportError("the Drive backend needs pydrive2: pip install 'tinytribe[gdrive]'") from None
    gauth = GoogleAuth(settings={"client_config_backend": "settings",
                                 "client_config": {"client_id": client_id, "client_secret": client_secret},
                                 "oauth_scope": [DRIVE_SCOPE], "save_credentials": False})
    gauth.credentials = OAuth2Credentials(None, client_id, client_secret, refresh_token, None, token_uri,
                                          "tinytribe")
    try:
        gauth.Refresh()
        gauth.Authorize()
    except Exception as e:
        raise RemoteError(f"Google Drive authorisation failed ({type(e).__name__}: {e}); check the refresh "
                          f"token (an OAuth app left in 'Testing' issues tokens that expire after 7 days)") from None
    if api_root is not None:
        from googleapiclient.discovery import build_from_document
        from googleapiclient.discovery_cache import get_static_doc
        import json

        doc = json.loads(get_static_doc("drive", "v2"))
        doc["rootUrl"] = api_root.rstrip("/") + "/"
        doc["baseUrl"] = doc["rootUrl"] + doc["servicePath"]
        gauth.service = build_from_document(doc, http=gauth.http)
    return GoogleDrive(gauth)


def drive_from_secrets(**kwargs: Any):
    """``drive_from_refresh_token`` with the GDRIVE_CLIENT_ID / _SECRET / _REFRESH_TOKEN secrets."""
    from tinytribe.secrets import get_secret

    names = ("GDRIVE_CLIENT_ID", "GDRIVE_CLIENT_SECRET", "GDRIVE_REFRESH_TOKEN")
    values = [get_secret(n) for n in names]
    missing = [n for n, v in zip(names, values) if not v]
    if missing:
        raise RemoteError(f"secret {missing[0]} is not set (README, 'On Kaggle': one-time token creation)")
    return drive_from_refresh_token(*values, **kwargs)


class DriveRemote(Remote):
    """A Drive folder (by id) as a remote.

    Args:
        drive: an authorised ``pydrive2.drive.GoogleDrive``.
        folder_id: the id of the run folder (the last part of its Drive URL).
    """

    def __init__(self, drive, folder_id: str):
        self.drive, self.folder_id = drive, folder_id
        self.description = f"Google Drive folder {folder_id}"
        self._folders: dict[str, str] = {"": folder_id}

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except RemoteError:
            raise
        except Exception as e:  # pydrive2.files.ApiRequestError, httplib2 errors, socket errors
            raise RemoteError(f"{self.description}: {what} failed ({type(e).__name__}: {str(e)[:300]})") from None

    def _children(self, parent: str, title: str | None = None) -> list:
        q = f"'{_q(parent)}' in parents and trashed = false"
        if title is not None:
            q += f" and title = '{_q(title)}'"
        return self._call("list", lambda: self.drive.ListFile({"q": q, "maxResults": 1000}).GetList())

    def _folder(self, path: str, create: bool) -> str | None:
        if path in self._folders:
            return self._folders[path]
        parent_path, _, name = path.rpartition("/")
        parent = self._folder(parent_path, create)
        if parent is None:
            return None
        found = [f for f in self._children(parent, name) if f["mimeType"] == FOLDER_MIME]
        if found:
            self._folders[path] = found[0]["id"]
        elif create:
            f = self.drive.CreateFile({"title": name, "mimeType": FOLDER_MIME, "parents": [{"id": parent}]})
            self._call("create folder", f.Upload)
            self._folders[path] = f["id"]
        else:
            return None
        return self._folders[path]

    def _file(self, key: str):
        parent_path, _, name = key.rpartition("/")
        parent = self._folder(parent_path, create=False)
        if parent is None:
            return None
        found = [f for f in self._children(parent, name) if f["mimeType"] != FOLDER_MIME]
        return found[0] if found else None

    def exists(self, key: str) -> bool:
        return self._file(key) is not None

    def list(self) -> dict[str, int]:
        out: dict[str, int] = {}

        def walk(folder_id: str, prefix: str) -> None:
            for f in self._children(folder_id):
                if f["mimeType"] == FOLDER_MIME:
                    self._folders[prefix + f["title"]] = f["id"]
                    walk(f["id"], prefix + f["title"] + "/")
                else:
                    out[prefix + f["title"]] = int(f.get("fileSize", 0))

        walk(self.folder_id, "")
        return out

    def upload(self, local: Path, key: str) -> None:
        parent_path, _, name = key.rpartition("/")
        f = self._file(key)
        if f is None:
            f = self.drive.CreateFile({"title": name, "parents": [{"id": self._folder(parent_path, create=True)}],
                                       "mimeType": "application/octet-stream"})
        f.SetContentFile(str(local))
        try:
            self._call(f"upload {key}", f.Upload)
        finally:
            if getattr(f, "content", None) is not None:
                f.content.close()

    def download(self, key: str, local: Path) -> None:
        f = self._file(key)
        if f is None:
            raise RemoteError(f"{self.description}: {key} not found")
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._call(f"download {key}", f.GetContentFile, str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        f = self._file(key)
        if f is not None:
            self._call(f"delete {key}", f.Delete)
