import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from marc_keras.data.movie_lens import MovieLens

DATA_DIR = Path(
    os.environ.get("MARC_KERAS_ML1M_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-1m-half"
)
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "ratings.dat").is_file(), reason=f"no MovieLens data in {DATA_DIR}"
)

MOVIES = (
    "1::Toy Story (1995)::Animation|Children's|Comedy\n73::Misérables, Les (1995)::Drama|Musical\n"
)
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
RATINGS = "1::1::5::978300760\n1::73::3::978302109\n2::1::4::978298413\n"


@pytest.fixture(scope="module")
def data():
    return MovieLens.load(DATA_DIR)


def write_dataset(directory, movies=MOVIES, users=USERS, ratings=RATINGS):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("movies.dat", movies), ("users.dat", users), ("ratings.dat", ratings)):
        (directory / name).write_bytes(text.encode("latin-1"))
    return directory


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MARC_KERAS_ML1M_DIR", raising=False)
    monkeypatch.setenv("MARC_KERAS_CACHE", str(tmp_path / "cache"))


@needs_data
def test_reads_the_real_counts(data):
    assert data.describe() == {
        "users": 6040,
        "users_with_interactions": 2999,
        "items": 3883,
        "items_with_interactions": 3615,
        "interactions": 487650,
        "positive_rate": pytest.approx(0.5723859, abs=1e-6),
    }
    ratings = data.interactions
    assert set(ratings["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (ratings["label"] == (ratings["rating"] > 3)).all()
    assert ratings["user_id"].astype(int).between(1, 2999).all()
    first = ratings.iloc[0]
    assert (first.user_id, first.item_id, first.rating, first.timestamp) == (
        "1",
        "1193",
        5.0,
        978300760,
    )


@needs_data
def test_decodes_titles_genres_and_demographics(data):
    movies = data.items.set_index("item_id")
    assert list(data.items.columns) == ["item_id", "title", "genres"]
    assert movies.loc["1", "genres"] == "Animation|Children's|Comedy"
    # latin-1 bytes 0xe9 and 0xb3 in movies.dat.
    assert movies.loc["73", "title"] == "Misérables, Les (1995)"
    assert movies.loc["1320", "title"] == "Alien³ (1992)"
    users = data.users.set_index("user_id")
    assert list(data.users.columns) == ["user_id", "gender", "age", "occupation", "zip_code"]
    assert users.loc["1"].tolist() == ["female", "under 18", "K-12 student", "48067"]
    assert users.loc["2"].tolist() == ["male", "56+", "self-employed", "70072"]
    assert users.loc["6040"].tolist() == ["male", "25-34", "doctor/health care", "11106"]
    assert set(users["age"]) == {"under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
    assert users["occupation"].nunique() == 21


def test_default_templates_render_ml1m_texts(tmp_path):
    data = MovieLens.load(write_dataset(tmp_path / "ml"))
    templates = MovieLens.text_templates()
    items = data.items.set_index("item_id")
    item = {"item_id": "73", **items.loc["73"].to_dict()}
    assert templates.render_item(item) == "Misérables, Les (1995). Genres: Drama, Musical."
    user = data.users.iloc[0].to_dict()
    history = [{**items.loc["1"].to_dict(), "rating": 5.0}]
    assert templates.render_user(user, history) == (
        "Female, age under 18, K-12 student. Recently watched: Toy Story (1995), 5 stars."
    )


def test_missing_file_says_how_to_get_it(tmp_path):
    directory = write_dataset(tmp_path / "ml")
    (directory / "users.dat").unlink()
    with pytest.raises(ValueError, match=r"lacks the MovieLens-1M files \['users\.dat'\]") as error:
        MovieLens.load(directory)
    assert "marc-keras data download" in str(error.value)
    assert "MARC_KERAS_ML1M_DIR" in str(error.value)


@pytest.mark.parametrize(
    "file, text, pattern",
    [
        (
            "ratings",
            RATINGS + "2,73,4,978298413\n",
            r"ratings\.dat, line 4: expected 4 fields .* separated by '::', found 1",
        ),
        ("movies", MOVIES.replace("::Drama", ":Drama"), r"movies\.dat, line 2: .*found 2"),
        ("users", USERS.replace("::48067", "::48067::x"), r"users\.dat, line 1: .*found 6"),
        ("users", USERS.replace("1::F", "1::X"), r"users\.dat, line 1: unknown gender code 'X'"),
        ("users", USERS.replace("::56::", "::57::"), r"users\.dat, line 2: unknown age code '57'"),
        (
            "ratings",
            RATINGS + "3::999::4::978298413\n",
            r"ratings\.dat: column 'item_id' refers to 1 ids that are not in .*movies\.dat",
        ),
        (
            "ratings",
            RATINGS + "7::1::4::978298413\n",
            r"ratings\.dat: column 'user_id' refers to 1 ids that are not in .*users\.dat",
        ),
        (
            "ratings",
            RATINGS.replace("::3::", "::three::"),
            r"ratings\.dat: column 'rating' has 1 non-numeric values \(rows 2",
        ),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, file, text, pattern):
    directory = write_dataset(tmp_path / "ml", **{file: text})
    with pytest.raises(ValueError, match=pattern):
        MovieLens.load(directory)


def test_resolve_directory_order(tmp_path, monkeypatch):
    given = write_dataset(tmp_path / "given")
    from_env = write_dataset(tmp_path / "env")
    cached = write_dataset(tmp_path / "cache" / "ml-1m")
    assert MovieLens.resolve_directory() == cached
    monkeypatch.setenv("MARC_KERAS_ML1M_DIR", str(from_env))
    assert MovieLens.resolve_directory() == from_env
    assert MovieLens.resolve_directory(given) == given
    with pytest.raises(ValueError, match=r"The directory passed in \(.*nowhere\) lacks"):
        MovieLens.resolve_directory(tmp_path / "nowhere")
    monkeypatch.setenv("MARC_KERAS_ML1M_DIR", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"MARC_KERAS_ML1M_DIR \(.*empty\) lacks"):
        MovieLens.resolve_directory()
    monkeypatch.delenv("MARC_KERAS_ML1M_DIR")
    shutil.rmtree(cached)
    with pytest.raises(ValueError, match=r"download cache \(.*ml-1m\) lacks .*data download"):
        MovieLens.load()


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as bundle:
        for name, text in members.items():
            bundle.writestr(name, text.encode("latin-1"))
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_extracts_and_skips(tmp_path):
    url, sha256 = make_zip(
        tmp_path / "ml-1m.zip",
        {
            "ml-1m/movies.dat": MOVIES,
            "ml-1m/users.dat": USERS,
            "ml-1m/ratings.dat": RATINGS,
            "ml-1m/README": "readme",
            "ml-1m/../../evil.dat": "ignored",
        },
    )
    target = MovieLens.download(url=url, sha256=sha256)
    assert target == tmp_path / "cache" / "ml-1m"
    assert sorted(path.name for path in target.iterdir()) == [
        ".sha256",
        "README",
        "movies.dat",
        "ratings.dat",
        "users.dat",
    ]
    assert not (tmp_path / "evil.dat").exists()
    assert MovieLens.load().describe()["interactions"] == 3
    assert [p.name for p in target.parent.iterdir()] == ["ml-1m"]

    # Present and valid: nothing is fetched, even from a dead URL.
    missing_url = (tmp_path / "gone.zip").as_uri()
    assert MovieLens.download(url=missing_url, sha256=sha256) == target
    # A different expected checksum means the copy is stale: fetch again.
    with pytest.raises(OSError, match=r"Could not download .*gone\.zip"):
        MovieLens.download(url=missing_url, sha256="0" * 64)


def test_download_replaces_a_stale_copy(tmp_path):
    cache = tmp_path / "elsewhere"
    stale = write_dataset(cache / "ml-1m", ratings="1::1::1::1\n")
    url, sha256 = make_zip(
        tmp_path / "new.zip",
        {"movies.dat": MOVIES, "users.dat": USERS, "ratings.dat": RATINGS},
    )
    assert MovieLens.download(cache, url=url, sha256=sha256) == stale
    assert (stale / "ratings.dat").read_text() == RATINGS
    assert [p.name for p in cache.iterdir()] == ["ml-1m"]


def test_download_rejects_a_wrong_checksum_or_archive(tmp_path):
    url, sha256 = make_zip(tmp_path / "ml-1m.zip", {"ml-1m/movies.dat": MOVIES})
    wrong = "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
    with pytest.raises(ValueError, match=rf"has sha256 {sha256}, expected {wrong}"):
        MovieLens.download(url=url)
    with pytest.raises(ValueError, match=r"lacks \['users\.dat', 'ratings\.dat'\]"):
        MovieLens.download(url=url, sha256=sha256)
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid zip archive"):
        MovieLens.download(url=(tmp_path / "broken.zip").as_uri(), sha256=None)
    cache = tmp_path / "cache"
    assert not (cache / "ml-1m").exists()
    assert list(cache.iterdir()) == []
