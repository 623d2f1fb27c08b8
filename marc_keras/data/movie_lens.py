"""MovieLens-1M: download, read and map onto `InteractionData`."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from marc_keras.data.interaction_data import InteractionData
from marc_keras.data.text_templates import TextTemplates

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_SHA256 = "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
DIRECTORY_ENV = "MARC_KERAS_ML1M_DIR"
CACHE_ENV = "MARC_KERAS_CACHE"
FILES = ("movies.dat", "users.dat", "ratings.dat")
_EXTRACTED = FILES + ("README",)
_CHECKSUM_FILE = ".sha256"
_UNIT_SEPARATOR = "\x1f"
_HOW_TO_GET = (
    f"Run `marc-keras data download` (or MovieLens.download()) to fetch it "
    f"into the cache, or set {DIRECTORY_ENV} to a directory holding "
    f"{', '.join(FILES)}."
)

# Code tables from the ML-1M README.
AGE_GROUPS = {
    "1": "under 18",
    "18": "18-24",
    "25": "25-34",
    "35": "35-44",
    "45": "45-49",
    "50": "50-55",
    "56": "56+",
}
GENDERS = {"F": "female", "M": "male"}
OCCUPATIONS = {
    "0": "other",
    "1": "academic/educator",
    "2": "artist",
    "3": "clerical/admin",
    "4": "college/grad student",
    "5": "customer service",
    "6": "doctor/health care",
    "7": "executive/managerial",
    "8": "farmer",
    "9": "homemaker",
    "10": "K-12 student",
    "11": "lawyer",
    "12": "programmer",
    "13": "retired",
    "14": "sales/marketing",
    "15": "scientist",
    "16": "self-employed",
    "17": "technician/engineer",
    "18": "tradesman/craftsman",
    "19": "unemployed",
    "20": "writer",
}


def _read_dat(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a `::`-separated latin-1 file into string columns."""
    if not path.is_file():
        raise ValueError(f"MovieLens file {path} does not exist. {_HOW_TO_GET}")
    text = path.read_text(encoding="latin-1")
    # pandas' C parser needs a one-character separator; the ASCII unit
    # separator does not occur in MovieLens text. It is ~5x faster than
    # splitting lines in Python, which only runs to explain a bad file.
    try:
        frame = pd.read_csv(
            io.StringIO(text.replace("::", _UNIT_SEPARATOR)),
            sep=_UNIT_SEPARATOR,
            header=None,
            names=list(columns),
            dtype=str,
            quoting=csv.QUOTE_NONE,
            na_filter=False,
            engine="c",
        )
    except pd.errors.ParserError:
        return _read_dat_slowly(path, text, columns)
    # The C parser pads short lines silently; count separators to catch them.
    if text.count("::") != len(frame) * (len(columns) - 1):
        return _read_dat_slowly(path, text, columns)
    return frame


def _read_dat_slowly(path: Path, text: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Split lines in Python, naming the first line with a wrong field count."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != len(columns):
            raise ValueError(
                f"{path}, line {number}: expected {len(columns)} fields "
                f"({'::'.join(columns)}) separated by '::', found "
                f"{len(fields)}: {line[:80]!r}. The file is damaged or not "
                "in the MovieLens-1M format; download it again."
            )
        rows.append(fields)
    return pd.DataFrame(rows, columns=list(columns), dtype=str)


def _decode(frame: pd.DataFrame, column: str, codes: dict[str, str], path: Path) -> pd.Series:
    decoded = frame[column].map(codes)
    unknown = decoded.isna().to_numpy()
    if unknown.any():
        row = int(unknown.argmax())
        raise ValueError(
            f"{path}, line {row + 1}: unknown {column} code "
            f"{frame[column].iloc[row]!r}; the ML-1M README allows "
            f"{sorted(codes, key=lambda code: (len(code), code))}."
        )
    return decoded


def _cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "marc-keras"


def _missing_files(directory: Path) -> list[str]:
    return [name for name in FILES if not (directory / name).is_file()]


class MovieLens:
    """The MovieLens-1M dataset (GroupLens) as `InteractionData`.

    The package never ships the data: `download` fetches the official zip
    into a cache, and `load` reads any directory that holds `movies.dat`,
    `users.dat` and `ratings.dat` (a subset of users is fine).

    Example:
    ```python
    MovieLens.download()
    data = MovieLens.load()
    templates = MovieLens.text_templates()
    ```
    """

    @staticmethod
    def resolve_directory(directory: str | os.PathLike | None = None) -> Path:
        """Find the directory that holds the ML-1M files.

        Looks at `directory` when given, else at the `MARC_KERAS_ML1M_DIR`
        environment variable when set, else at the download cache
        `~/.cache/marc-keras/ml-1m` (root overridden by `MARC_KERAS_CACHE`).
        An explicit choice that lacks the files is an error rather than a
        silent fall-through to the next place.

        Args:
            directory: Directory holding the files, or None.

        Returns:
            The directory.

        Example:
        ```python
        MovieLens.resolve_directory("/data/ml-1m")
        ```
        """
        if directory is not None:
            path, origin = Path(directory).expanduser(), "The directory passed in"
        elif os.environ.get(DIRECTORY_ENV):
            path = Path(os.environ[DIRECTORY_ENV]).expanduser()
            origin = f"{DIRECTORY_ENV}"
        else:
            path, origin = _cache_root() / "ml-1m", "The download cache"
        missing = _missing_files(path)
        if missing:
            raise ValueError(
                f"{origin} ({path}) lacks the MovieLens-1M files {missing}. {_HOW_TO_GET}"
            )
        return path

    @staticmethod
    def load(directory: str | os.PathLike | None = None) -> InteractionData:
        """Read ML-1M into `InteractionData`.

        Items get `title` and `genres` ("|"-joined, e.g.
        "Animation|Children's|Comedy"); users get `gender` ("female" /
        "male"), `age` (e.g. "25-34", "under 18", "56+"), `occupation` (the
        README's name, e.g. "programmer") and `zip_code`. Labels are
        `rating > 3`.

        Args:
            directory: Directory with the files; see `resolve_directory`.

        Returns:
            The dataset.

        Example:
        ```python
        data = MovieLens.load("/data/ml-1m")
        data.describe()
        ```
        """
        directory = MovieLens.resolve_directory(directory)
        movies_path = directory / "movies.dat"
        users_path = directory / "users.dat"
        ratings_path = directory / "ratings.dat"
        movies = _read_dat(movies_path, ("item_id", "title", "genres"))
        users = _read_dat(users_path, ("user_id", "gender", "age", "occupation", "zip_code"))
        ratings = _read_dat(ratings_path, ("user_id", "item_id", "rating", "timestamp"))
        users["gender"] = _decode(users, "gender", GENDERS, users_path)
        users["age"] = _decode(users, "age", AGE_GROUPS, users_path)
        users["occupation"] = _decode(users, "occupation", OCCUPATIONS, users_path)
        return InteractionData.from_frames(
            ratings,
            movies,
            users,
            label_threshold=3.0,
            names={
                "interactions": str(ratings_path),
                "items": str(movies_path),
                "users": str(users_path),
            },
        )

    @staticmethod
    def download(
        cache_dir: str | os.PathLike | None = None,
        url: str = ML1M_URL,
        sha256: str | None = ML1M_SHA256,
    ) -> Path:
        """Download and extract ML-1M into `cache_dir/ml-1m`.

        The zip's sha256 is checked before anything is extracted; files are
        extracted into a temporary directory that is renamed into place, so
        an interrupted download never leaves a half-written dataset. When
        the directory already holds the files from a zip with this checksum,
        nothing is downloaded (with `sha256=None`, any completed earlier
        download counts).

        Args:
            cache_dir: Cache root; defaults to `MARC_KERAS_CACHE` or
                `~/.cache/marc-keras`.
            url: Where to fetch the zip (any urllib URL, `file://` too).
            sha256: Expected sha256 of the zip, or None to skip the check
                (for a mirror with a different archive).

        Returns:
            The directory holding the extracted files.

        Example:
        ```python
        directory = MovieLens.download()
        data = MovieLens.load(directory)
        ```
        """
        root = Path(cache_dir).expanduser() if cache_dir is not None else _cache_root()
        target = root / "ml-1m"
        expected = None if sha256 is None else sha256.lower()
        checksum_path = target / _CHECKSUM_FILE
        if not _missing_files(target) and checksum_path.is_file():
            recorded = checksum_path.read_text().strip()
            if expected is None or recorded == expected:
                return target

        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".ml-1m-") as staging:
            staging = Path(staging)
            archive = staging / "ml-1m.zip"
            actual = _fetch(url, archive)
            if expected is not None and actual != expected:
                raise ValueError(
                    f"The file downloaded from {url} has sha256 {actual}, "
                    f"expected {expected}. The download was corrupted or the "
                    "URL serves another archive: retry, or pass the mirror's "
                    "checksum as sha256=."
                )
            extracted = staging / "ml-1m"
            _extract(archive, extracted, url)
            (extracted / _CHECKSUM_FILE).write_text(actual + "\n")
            if target.exists():
                # os.replace cannot overwrite a non-empty directory: move the
                # stale copy aside first, inside the staging dir that is
                # cleaned up on exit.
                target.rename(staging / "stale")
            extracted.rename(target)
        return target

    @staticmethod
    def text_templates() -> TextTemplates:
        """Default ML-1M templates.

        User: "Female, age 25-34, programmer. Recently watched: Toy Story
        (1995), 5 stars; Heat (1995), 3 stars." Item: "Toy Story (1995).
        Genres: Animation, Children's, Comedy."

        Returns:
            The templates.

        Example:
        ```python
        MovieLens.text_templates().render_item(
            {"title": "Heat (1995)", "genres": "Action|Crime|Thriller"}
        )
        ```
        """
        return TextTemplates(
            user_template="{gender!c}, age {age}, {occupation}. Recently watched: {history}.",
            history_item_template="{title}, {stars}",
            history_separator="; ",
            item_template="{title}. Genres: {genres!l}.",
        )


def _fetch(url: str, destination: Path) -> str:
    """Stream `url` into `destination` and return its sha256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response, destination.open("wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        raise OSError(
            f"Could not download {url}: {error}. Check network access, or "
            f"download and unzip it yourself and set {DIRECTORY_ENV}."
        ) from error
    return digest.hexdigest()


def _extract(archive: Path, destination: Path, url: str) -> None:
    """Extract the ML-1M files, found by base name, flat into `destination`."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            # Pick members by base name only: the official zip nests them in
            # ml-1m/, and this also ignores any path tricks in member names.
            members = {
                Path(info.filename).name: info
                for info in bundle.infolist()
                if not info.is_dir() and Path(info.filename).name in _EXTRACTED
            }
            missing = [name for name in FILES if name not in members]
            if missing:
                raise ValueError(
                    f"The archive from {url} lacks {missing}; it is not the MovieLens-1M zip."
                )
            destination.mkdir()
            for name, info in members.items():
                with bundle.open(info) as source, (destination / name).open("wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"The file from {url} is not a valid zip archive ({error}); download it again."
        ) from error
