"""gcp-storage-emulator, downloading as GCS does in two ways it lacks: suffix byte ranges
("Range: bytes=-N", the last N bytes; array_record's reader opens a shard by asking for its
tail) and the object's generation in an x-goog-generation header (tensorstore reads it to
make its next write conditional). Same arguments as `gcp-storage-emulator`."""

import re
import sys

from gcp_storage_emulator import __main__ as emulator
from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    header = request.get_header("range", "") or ""
    if suffix := re.fullmatch(r"\s*bytes=-(\d+)\s*", header):
        params = request.params
        size = len(storage.get_file(params["bucket_name"], params["object_id"]))
        headers = request._request_handler.headers
        del headers["range"]
        headers["range"] = f"bytes={max(size - int(suffix[1]), 0)}-"
    _download(request, response, storage, *args, **kwargs)
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # noqa: BLE001 - a missing object: the 404 is already written
        return
    response["x-goog-generation"] = obj["generation"]


objects.download = download  # objects.get(alt=media) looks it up here
server.HANDLERS = tuple(
    (pattern, {method: download if handler is _download else handler
               for method, handler in methods.items()})
    for pattern, methods in server.HANDLERS)

if __name__ == "__main__":
    sys.exit(emulator.main())
