"""Reading a user's text tables (CSV, TSV) with one sentence that names the real cause of a bad file.

A header with spaces after its commas (``age, path, split``) is read as meant, and a UTF-8 byte-order mark is
skipped. A file whose columns are separated by another character is named as such, with the header as it was
read, instead of "lacks the columns" while they are visibly there; a file that is not UTF-8 is named with the
byte offset and line of its first undecodable byte.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import RunError

BOM = b"\xef\xbb\xbf"
SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def undecodable(path) -> str | None:
    """Where ``path`` stops being UTF-8 text (after an optional byte-order mark): ``"byte 0xe9 at offset 1234
    (line 5)"``, or None when every byte decodes."""
    raw = Path(path).read_bytes()
    start = len(BOM) if raw.startswith(BOM) else 0
    try:
        raw[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line = raw.count(b"\n", 0, offset) + 1
        return f"byte 0x{raw[offset]:02x} at offset {offset} (line {line})"
    return None


def not_utf8(path, what: str, remedy: str = "") -> RunError:
    """The sentence for a file that is not UTF-8 text (Latin-1 accents, a binary file)."""
    where = undecodable(path) or "a byte"
    return RunError(f"{what} {path} is not UTF-8 text: {where} cannot be decoded; re-save it as UTF-8 (for a "
                    f"Latin-1 file `iconv -f latin1 -t utf-8 IN > OUT`){remedy}.")


def other_separator(header: list[str], separator: str = ",") -> str | None:
    """The name of the separator (``"semicolons"``) a header read as one column holds instead of ``separator``."""
    if len(header) != 1:
        return None
    found = [(header[0].count(s), name) for s, name in SEPARATORS.items() if s != separator and s in header[0]]
    return max(found)[1] if found else None


def describe_header(path, header: list[str], required, what: str, expected: str, separator: str = ",") -> str:
    """Why a header lacks ``required`` columns, naming what was read: another separator, the columns found and,
    for a name that differs only in case or spaces, that one."""
    other = other_separator(header, separator)
    if other:
        return (f"{what} {path} is not separated by {SEPARATORS[separator]}: its header {header[0]!r} was read as one "
                f"column, its columns being separated by {other}; save it with {SEPARATORS[separator]} between the "
                f"columns (expected {expected}).")
    missing = [name for name in required if name not in header]
    near = {name.strip().lower(): name for name in header}
    hints = [f"{near[name.lower()]!r} for {name}" for name in missing if name.lower() in near]
    found = ", ".join(repr(name) for name in header[:12]) + (", …" if len(header) > 12 else "")
    hint = f" (names are case-sensitive: found {', '.join(hints)})" if hints else ""
    return (f"{what} {path} lacks the column(s) {', '.join(missing)}; expected {expected}, its header holds "
            f"{found}{hint}.")


def read_csv(path, required=(), *, what: str = "CSV file", expected: str | None = None, remedy: str = "",
             **options):
    """``pandas.read_csv`` of a user's CSV with a header row: spaces after the commas skipped, a byte-order mark
    dropped, the column names stripped; a :class:`RunError` (one sentence naming ``what`` and the file) for a
    file that is not UTF-8, is empty, does not parse, or lacks a ``required`` column (with the separator or the
    columns actually read). ``remedy`` ends the parse error's sentence (``"; re-create it with data/"``)."""
    import pandas as pd

    expected = expected or ",".join(required)
    try:
        frame = pd.read_csv(path, skipinitialspace=True, encoding="utf-8-sig", **options)
    except UnicodeDecodeError:
        raise not_utf8(path, what) from None
    except pd.errors.EmptyDataError:
        raise RunError(f"{what} {path} is empty; it needs a header row ({expected}) and data rows"
                       f"{remedy}.") from None
    except Exception as error:  # noqa: BLE001 - any parser error means the same thing to the user
        cause = " ".join(str(error).split())
        raise RunError(f"{what} {path} could not be parsed ({cause}){remedy}.") from error
    frame.columns = [str(name).strip() for name in frame.columns]
    if any(name not in frame.columns for name in required):
        raise RunError(describe_header(path, list(frame.columns), required, what, expected))
    return frame
