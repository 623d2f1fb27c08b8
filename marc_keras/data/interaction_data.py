"""The bring-your-own interaction format every dataset maps onto."""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "label", "timestamp")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_TABLES = ("interactions", "items", "users")


def _undecodable_byte(path: Path, encoding: str) -> tuple[int, int, int] | None:
    """`(line, byte in line, byte value)` of the first byte `encoding` cannot decode."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    decoder = codecs.getincrementaldecoder(encoding)()
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as error:
                return number, error.start + 1, error.object[error.start]
    return None


def _csv_error(path: Path, table: str, error: Exception, encoding: str) -> ValueError:
    """Turns a pandas CSV reading error into one line that names the file and line."""
    if isinstance(error, UnicodeDecodeError):
        found = _undecodable_byte(path, encoding)
        where = (
            f", line {found[0]}: byte 0x{found[2]:02x} (byte {found[1]} of the line)"
            if found
            else f": {error}:"
        )
        return ValueError(
            f"{path}{where} is not valid {encoding} text. Save the {table} file as UTF-8, or "
            "set data.encoding (encoding= of InteractionData.from_files) to the encoding it "
            'was written in, e.g. "latin-1" or "cp1252".'
        )
    if isinstance(error, pd.errors.EmptyDataError):
        return ValueError(
            f"{path} is empty: the {table} file needs a header line naming its columns "
            "and one line per row."
        )
    message = str(error)
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if ragged:
        expected, line, found = ragged.groups()
        return ValueError(
            f"{path}, line {line}: {found} fields where the header has {expected}. Put "
            'double quotes around a value that contains a comma ("Heat, the movie"), or '
            "fix the line."
        )
    unclosed = re.search(r"EOF inside string starting at row (\d+)", message)
    if unclosed:
        return ValueError(
            f"{path}, line {int(unclosed.group(1)) + 1}: a double quote opened on this line "
            'is never closed. Close it, or write a quote inside a quoted value as "".'
        )
    return ValueError(f"{path} is not a readable CSV {table} file: {message.strip()}")


def _read_table(
    path: str | os.PathLike, table: str, id_columns: tuple[str, ...], encoding: str = "utf-8"
) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"The {table} file {path} does not exist. Check the path, or "
            "write the table as CSV (.csv) or parquet (.parquet)."
        )
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"Unknown text encoding {encoding!r} for {path}; use one Python knows, such "
                'as "utf-8", "latin-1" or "cp1252".'
            ) from None
        try:
            # Ids stay text: "007" and "7" are different items.
            return pd.read_csv(
                path,
                dtype={column: str for column in id_columns},
                keep_default_na=False,
                na_values=[""],
                encoding=encoding,
            )
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise _csv_error(path, table, error, encoding) from error
    if name.endswith(_PARQUET_SUFFIXES):
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as error:
            # pyarrow's ArrowInvalid is a ValueError; its message names a buffer, not the file.
            raise ValueError(
                f"{path} is not a readable parquet {table} file ({error}). Write it again, "
                "or as CSV."
            ) from error
    raise ValueError(
        f"The {table} file {path} has an unknown suffix; use one of "
        f"{list(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}."
    )


def _first_rows(mask: np.ndarray, limit: int = 3) -> str:
    rows = np.flatnonzero(mask)[:limit] + 1
    return ", ".join(str(row) for row in rows)


def _id_column(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = frame[column]
    blank = values.astype(str).str.strip().str.len() == 0
    missing = values.isna().to_numpy() | blank.to_numpy()
    if missing.any():
        raise ValueError(
            f"{source}: column '{column}' is empty in {int(missing.sum())} rows "
            f"(rows {_first_rows(missing)}, 1-based, header not counted). "
            "Fill in the ids or drop those rows."
        )
    if pd.api.types.is_float_dtype(values) and (values % 1 == 0).all():
        # Parquet/pandas may store integer ids as floats; "12" not "12.0".
        values = values.astype(np.int64)
    return values.astype(str)


def _numeric_column(
    frame: pd.DataFrame, column: str, source: str, hint: str, dtype: type = np.float64
) -> pd.Series:
    values = frame[column]
    # Casting straight to int64 keeps fine timestamps (e.g. nanoseconds)
    # exact where a float round trip would not; floats are not cast to int
    # here because that truncates fractions silently.
    if dtype is np.float64 or not pd.api.types.is_float_dtype(values):
        try:
            return values.astype(dtype)
        except (TypeError, ValueError, OverflowError):
            pass
    # Slow path, which also finds and names the offending values.
    numeric = pd.to_numeric(values, errors="coerce")
    bad = (numeric.isna() & values.notna()).to_numpy()
    if bad.any():
        first = values[bad].iloc[0]
        raise ValueError(
            f"{source}: column '{column}' has {int(bad.sum())} non-numeric "
            f"values (rows {_first_rows(bad)}, 1-based, header not counted; "
            f"first: {first!r}). {hint}"
        )
    return numeric


def _attribute_text(values: pd.Series) -> pd.Series:
    """An attribute column as text: missing values become "", whole floats lose ".0"."""
    missing = values.isna().to_numpy()
    present = values[~missing]
    if pd.api.types.is_float_dtype(values) and ((present % 1 == 0) & (present.abs() < 2**53)).all():
        # A column of years with one gap is read as floats: "1990", not "1990.0".
        values = values.astype("Int64")
    text = values.astype(str)
    text[missing] = ""
    return text


def _attribute_table(frame: pd.DataFrame, id_column: str, source: str) -> pd.DataFrame:
    if id_column not in frame.columns:
        raise ValueError(
            f"{source}: missing the column '{id_column}' (found "
            f"{list(frame.columns)}). Add an '{id_column}' column with one "
            "row per id."
        )
    if len(frame) == 0:
        raise ValueError(
            f"{source}: has no rows (only a header?); it needs one row per "
            f"{id_column.removesuffix('_id')}."
        )
    table = frame.copy()
    table[id_column] = _id_column(frame, id_column, source)
    duplicated = table[id_column].duplicated().to_numpy()
    if duplicated.any():
        examples = table[id_column][duplicated].unique()[:3].tolist()
        raise ValueError(
            f"{source}: column '{id_column}' has {int(duplicated.sum())} "
            f"duplicate ids (e.g. {examples}; repeated in rows "
            f"{_first_rows(duplicated)}, 1-based, header not counted). Keep one row per id."
        )
    for column in table.columns:
        if column != id_column:
            table[column] = _attribute_text(table[column])
    columns = [id_column] + [column for column in table.columns if column != id_column]
    return table[columns].reset_index(drop=True)


def _check_known(ids: pd.Series, known: pd.Series, column: str, source: str, table: str) -> None:
    unknown = ~ids.isin(known).to_numpy()
    if unknown.any():
        examples = ids[unknown].unique()[:3].tolist()
        raise ValueError(
            f"{source}: column '{column}' refers to "
            f"{int(pd.unique(ids[unknown]).size)} ids that are not in "
            f"{table} (e.g. {examples}; rows {_first_rows(unknown)}). "
            f"Add them to {table} or drop those interactions."
        )


@dataclasses.dataclass(frozen=True)
class InteractionData:
    """User-item interactions with item (and optional user) attributes.

    Every dataset is mapped onto this format; build one from files with
    `from_files` or from data frames with `from_frames`, which normalize
    dtypes and validate. The constructor only checks the schema.

    Args:
        interactions: Columns `user_id` (str), `item_id` (str), `rating`
            (float64, NaN when only labels are known), `label` (int8, 0/1)
            and `timestamp` (int64).
        items: A unique `item_id` (str) column plus attribute columns (str).
        users: A unique `user_id` (str) column plus attribute columns (str),
            or None. Users without interactions are allowed.

    Example:
    ```python
    data = InteractionData.from_files("clicks.parquet", "items.csv")
    data.describe()
    ```
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        fix = "Build it with InteractionData.from_frames, which normalizes dtypes."
        columns = list(self.interactions.columns)
        if columns != list(INTERACTION_COLUMNS):
            raise ValueError(
                f"InteractionData.interactions must have the columns "
                f"{list(INTERACTION_COLUMNS)} in that order, got {columns}. {fix}"
            )
        dtypes = {
            "rating": np.float64,
            "label": np.int8,
            "timestamp": np.int64,
        }
        for column, dtype in dtypes.items():
            if self.interactions[column].dtype != dtype:
                raise ValueError(
                    f"InteractionData.interactions['{column}'] must be "
                    f"{np.dtype(dtype).name}, got "
                    f"{self.interactions[column].dtype}. {fix}"
                )
        if "item_id" not in self.items.columns:
            raise ValueError(f"InteractionData.items needs an 'item_id' column. {fix}")
        if self.users is not None and "user_id" not in self.users.columns:
            raise ValueError(f"InteractionData.users needs a 'user_id' column. {fix}")

    @classmethod
    def from_frames(
        cls,
        interactions: pd.DataFrame,
        items: pd.DataFrame,
        users: pd.DataFrame | None = None,
        *,
        label_threshold: float = 3.0,
        names: Mapping[str, str] | None = None,
    ) -> InteractionData:
        """Normalize and validate data frames into an `InteractionData`.

        Args:
            interactions: Needs `user_id`, `item_id`, `timestamp` and at
                least one of `rating` / `label`; other columns are dropped.
                Ids become strings, timestamps integers (datetime columns
                become Unix seconds).
            items: A unique `item_id` column plus attribute columns.
            users: A unique `user_id` column plus attribute columns, or None.
            label_threshold: When `label` is absent it is derived as
                `rating > label_threshold`.
            names: How error messages call each table ("interactions",
                "items", "users" keys), e.g. the file it was read from.

        Returns:
            A validated `InteractionData`.

        Example:
        ```python
        data = InteractionData.from_frames(clicks_df, items_df, users_df)
        ```
        """
        names = {table: table for table in _TABLES} | dict(names or {})
        source = names["interactions"]
        items = _attribute_table(items, "item_id", names["items"])
        if users is not None:
            users = _attribute_table(users, "user_id", names["users"])

        missing = [
            column
            for column in ("user_id", "item_id", "timestamp")
            if column not in interactions.columns
        ]
        if missing:
            raise ValueError(
                f"{source}: missing the columns {missing} (found "
                f"{list(interactions.columns)}). An interactions table needs "
                "user_id, item_id, timestamp and a rating and/or label column."
            )
        if "rating" not in interactions.columns and "label" not in interactions.columns:
            raise ValueError(
                f"{source}: has neither a 'rating' nor a 'label' column. Add "
                "a numeric 'rating' (labels derive from it) or a 0/1 'label'."
            )
        if len(interactions) == 0:
            raise ValueError(f"{source}: has no rows; it needs at least one interaction.")

        user_ids = _id_column(interactions, "user_id", source)
        item_ids = _id_column(interactions, "item_id", source)

        if "rating" in interactions.columns:
            rating = _numeric_column(
                interactions, "rating", source, "Ratings must be numbers."
            ).astype(np.float64)
        else:
            rating = pd.Series(np.nan, index=interactions.index, dtype=np.float64)

        if "label" in interactions.columns:
            label = _numeric_column(interactions, "label", source, "Labels must be 0 or 1.")
            invalid = ~label.isin([0, 1]).to_numpy()
            if invalid.any():
                first = interactions["label"][invalid].iloc[0]
                raise ValueError(
                    f"{source}: column 'label' has {int(invalid.sum())} values "
                    f"not in {{0, 1}} (rows {_first_rows(invalid)}; first: "
                    f"{first!r}). Write 1 for positive and 0 for negative."
                )
        else:
            unrated = rating.isna().to_numpy()
            if unrated.any():
                raise ValueError(
                    f"{source}: column 'rating' is empty in {int(unrated.sum())} "
                    f"rows (rows {_first_rows(unrated)}) and there is no "
                    "'label' column to fall back on. Fill in the ratings or "
                    "add a 0/1 'label' column."
                )
            label = rating > label_threshold

        timestamp = interactions["timestamp"]
        if pd.api.types.is_datetime64_any_dtype(timestamp):
            if timestamp.dt.tz is not None:
                timestamp = timestamp.dt.tz_convert("UTC").dt.tz_localize(None)
            timestamp = timestamp.astype("datetime64[s]").astype(np.int64)
        else:
            timestamp = _numeric_column(
                interactions,
                "timestamp",
                source,
                "Timestamps must be integers, e.g. Unix seconds.",
                dtype=np.int64,
            )
            unusable = (timestamp.isna() | (timestamp % 1 != 0)).to_numpy()
            if unusable.any():
                raise ValueError(
                    f"{source}: column 'timestamp' has {int(unusable.sum())} "
                    f"empty or fractional values (rows {_first_rows(unusable)}). "
                    "Timestamps must be integers, e.g. Unix seconds."
                )

        _check_known(item_ids, items["item_id"], "item_id", source, names["items"])
        if users is not None:
            _check_known(user_ids, users["user_id"], "user_id", source, names["users"])

        frame = pd.DataFrame(
            {
                "user_id": user_ids.to_numpy(),
                "item_id": item_ids.to_numpy(),
                "rating": rating.to_numpy(np.float64),
                "label": label.to_numpy().astype(np.int8),
                "timestamp": timestamp.to_numpy().astype(np.int64),
            }
        )
        return cls(interactions=frame, items=items, users=users)

    @classmethod
    def from_files(
        cls,
        interactions: str | os.PathLike,
        items: str | os.PathLike,
        users: str | os.PathLike | None = None,
        *,
        label_threshold: float = 3.0,
        encoding: str = "utf-8",
    ) -> InteractionData:
        """Read CSV (`.csv`, `.csv.gz`) or parquet (`.parquet`, `.pq`) files.

        Args:
            interactions: Interactions file with `user_id`, `item_id`,
                `timestamp` and at least one of `rating` / `label`.
            items: Items file with a unique `item_id` plus attribute columns.
            users: Optional users file with a unique `user_id` plus
                attribute columns.
            label_threshold: When `label` is absent it is derived as
                `rating > label_threshold`.
            encoding: Text encoding of the CSV files, e.g. "utf-8",
                "latin-1" or "cp1252" (parquet files ignore it).

        Returns:
            A validated `InteractionData`.

        Raises:
            ValueError: a file is missing or unreadable (undecodable bytes,
                lines with too many fields), or its content does not fit the
                format; the message names the file and the line or rows.

        Example:
        ```python
        data = InteractionData.from_files(
            "ratings.parquet", "movies.csv", "users.csv"
        )
        ```
        """
        return cls.from_frames(
            _read_table(interactions, "interactions", ("user_id", "item_id"), encoding),
            _read_table(items, "items", ("item_id",), encoding),
            None if users is None else _read_table(users, "users", ("user_id",), encoding),
            label_threshold=label_threshold,
            names={
                "interactions": str(interactions),
                "items": str(items),
                "users": str(users),
            },
        )

    def describe(self) -> dict[str, float | int]:
        """Count users, items and interactions.

        Returns:
            A dict with `users` (the users table's rows, or the users with
            interactions when there is no table), `users_with_interactions`,
            `items`, `items_with_interactions`, `interactions` and
            `positive_rate` (mean label).

        Example:
        ```python
        MovieLens.load().describe()["interactions"]
        ```
        """
        users_with_interactions = int(self.interactions["user_id"].nunique())
        return {
            "users": users_with_interactions if self.users is None else len(self.users),
            "users_with_interactions": users_with_interactions,
            "items": len(self.items),
            "items_with_interactions": int(self.interactions["item_id"].nunique()),
            "interactions": len(self.interactions),
            "positive_rate": float(self.interactions["label"].mean()),
        }
