"""Readers of raw medical files (DICOM, video, ECG, image folders with manifests).

Each reader returns plain numpy arrays and raises one error type, `FormatError`, for
any input it cannot read, so an ingest driver can count and skip bad files without
knowing which library parsed them. Third-party parsers raise many exception types
on corrupt bytes; readers wrap those at the call that parses, and nothing else.
"""

import os

# What `mmjax data ingest --format` reads: auto-detected, a CSV/JSONL manifest, or a folder
# of one kind of file. Defined here, without the readers' imports, for the command line.
SOURCE_FORMATS = ("auto", "manifest", "dicom", "video", "ecg", "audio")


class FormatError(ValueError):
    """Bad or unreadable input; str(e) names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # ingest workers send errors across processes
        return type(self), (self.path, self.reason)

    @classmethod
    def caused_by(cls, path, what: str, error: BaseException) -> "FormatError":
        """`what` went wrong, with the underlying parser error as detail."""
        return cls(path, f"{what} ({type(error).__name__}: {error})")


def existing_file(path) -> str:
    """`path` as a string, once it is known to name a regular file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(path, "not a regular file" if os.path.exists(path) else "no such file")
    return path
