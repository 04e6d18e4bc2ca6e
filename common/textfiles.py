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


SPLITS = ("train", "val", "test")


def _first_bad(path, column: str, raw, bad, what: str) -> RunError:
    """The sentence for the first row where ``bad`` holds, in ``column`` of the raw strings ``raw``."""
    row = int(bad.nonzero()[0][0])
    value = str(raw[row])
    shown = "empty" if not value.strip() else f"{value!r}, {what}"
    return RunError(f"CSV file {path}, data row {row + 1} (line {row + 2}), column {column!r}: the cell is {shown}; "
                    "fix or drop that row.")


def read_regression_csv(path, label: str, *, seed: int = 0, fractions=(0.8, 0.1, 0.1)):
    """A CSV of numeric feature columns, one numeric ``label`` column and optionally a ``split`` column, as
    ``(features (N, F) float32, labels (N,) float32, splits (N,) of 'train'/'val'/'test', feature names)``.

    Split names are read in any case with spaces around them (``Train``, `` VAL``); without the column the rows
    are split at random by ``fractions`` with ``seed``. Every problem is a :class:`RunError` naming the file: no
    such file, a folder, not UTF-8, empty, no data rows, unparsable, another separator, no ``label`` column, no
    feature column, a cell that is empty or not a finite number (with its row, line and column), an unknown split
    name, or a split without rows.
    """
    import numpy as np

    path = Path(path)
    if path.is_dir():
        raise RunError(f"CSV file {path} is a folder; pass the CSV file itself.")
    if not path.is_file():
        raise RunError(f"CSV file {path} does not exist; pass the path of a CSV with numeric feature columns, the "
                       f"label column (--label {label}) and optionally a train/val/test `split` column.")
    if label == "split":
        raise RunError(f"--label split: in CSV file {path} `split` is the column of train/val/test names; pass "
                       "--label with the column of the numbers to predict.")
    frame = read_csv(path, what="CSV file", expected=f"feature columns, {label} and optionally split", dtype=str,
                     keep_default_na=False)
    columns = list(frame.columns)
    if label not in columns:
        if other_separator(columns):
            raise RunError(describe_header(path, columns, (label,), "CSV file",
                                           f"feature columns, {label} and optionally split"))
        near = [name for name in columns if name.lower() == label.lower()]
        hint = f" (names are case-sensitive: found {near[0]!r})" if near else ""
        raise RunError(f"CSV file {path} has no label column {label!r}{hint}; its header holds "
                       f"{', '.join(map(repr, columns[:12]))}: pass --label with the name of the label column.")
    if len(frame) == 0:
        raise RunError(f"CSV file {path} has a header but no data rows; add rows.")
    features = [name for name in columns if name not in (label, "split")]
    if not features:
        raise RunError(f"CSV file {path} has no feature column besides the label {label!r}"
                       f"{' and split' if 'split' in columns else ''}; add the numeric columns to predict it from.")
    values = {}
    for name in [*features, label]:
        raw = frame[name].to_numpy(dtype=str)
        numbers = _numbers(raw)
        bad = ~np.isfinite(numbers) | (np.abs(numbers) > np.finfo(np.float32).max)
        if bad.any():
            raise _first_bad(path, name, raw, bad, "not a finite number")
        values[name] = numbers.astype(np.float32)
    n = len(frame)
    if "split" in columns:
        raw = frame["split"].to_numpy(dtype=str)
        splits = np.char.lower(np.char.strip(raw))
        bad = ~np.isin(splits, SPLITS)
        if bad.any():
            raise _first_bad(path, "split", raw, bad, f"not one of {', '.join(SPLITS)} (in any case)")
        how = "its split column"
    else:
        splits = np.random.default_rng(seed).choice(list(SPLITS), n, p=list(fractions))
        how = f"the random {'/'.join(f'{round(100 * f)}' for f in fractions)} split of its {n} data rows"
    for name in SPLITS:
        if not (splits == name).any():
            raise RunError(f"CSV file {path} has no {name} rows ({how}); every split needs rows: add rows, or a "
                           "split column naming train, val and test rows.")
    return np.stack([values[name] for name in features], 1), values[label], splits, features


def _numbers(raw):
    """Strings to float64, NaN where a cell is empty or not a number (``pandas.to_numeric``)."""
    import pandas as pd
    return pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype="float64")
