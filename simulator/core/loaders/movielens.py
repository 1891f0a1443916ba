"""MovieLens original formats: ml-100k (``u.data`` tab-separated, ``u.item`` '|'-separated),
ml-1m / ml-10m (``ratings.dat``/``movies.dat`` '::'-separated), ml-latest (``ratings.csv``,
``movies.csv``)."""

from __future__ import annotations

from pathlib import Path

from simulator.core.errors import DataError
from simulator.core.loaders.common import (
    check_file,
    read_csv_table,
    read_text_table,
    require_columns,
    validate_numeric,
)
from simulator.core.preprocess import Canonical, text_template_for

_GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                "Thriller", "War", "Western"]


def _title_year_sql(col: str) -> tuple[str, str]:
    """Split 'Toy Story (1995)' into title and year in SQL."""
    title = f"""trim(regexp_replace({col}, '\\s*\\((\\d{{4}})\\)\\s*$', ''))"""
    year = f"""NULLIF(regexp_extract({col}, '\\((\\d{{4}})\\)\\s*$', 1), '')"""
    return title, year


def _ratings(con, path: Path, sep: str, header: bool, skip: bool) -> tuple[str, int]:
    cols = None if header else ["user", "item", "rating", "ts"]
    t, names, n_bad = read_text_table(con, path, sep=sep, columns=cols, header=header, skip_bad_lines=skip)
    if header:
        ren = {"userId": "user", "movieId": "item", "rating": "rating", "timestamp": "ts"}
        missing = [k for k in ren if k not in names]
        if missing:
            raise DataError(f"missing column(s) {', '.join(missing)}", file=str(path), field=missing[0])
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {t} AS SELECT _line, "userId" AS user, "movieId" AS item,
            rating, "timestamp" AS ts FROM {t}""")
    n_bad += validate_numeric(con, t, "ts", path=str(path), skip_bad_lines=skip)
    n_bad += validate_numeric(con, t, "rating", path=str(path), skip_bad_lines=skip)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {t}_canon AS SELECT trim(user) AS user, trim(item) AS item,
        CAST(trim(ts) AS DOUBLE) AS ts, CAST(trim(rating) AS DOUBLE) AS value, 'interact' AS event,
        _line AS seq FROM {t}""")
    return f"{t}_canon", n_bad


def load_movielens(con, path: str | Path, *, skip_bad_lines: bool = False) -> Canonical:
    p = Path(path)
    check_file(p)
    users = None
    if (p / "u.data").exists():
        inter, skipped = _ratings(con, p / "u.data", "\t", False, skip_bad_lines)
        items = None
        if (p / "u.item").exists():
            cols = ["item", "raw_title", "release", "video", "url"] + [f"g{i}" for i in range(19)]
            t, _, b = read_text_table(con, p / "u.item", sep="|", columns=cols, header=False,
                                      skip_bad_lines=skip_bad_lines, encoding="latin-1")
            skipped += b
            title, year = _title_year_sql("raw_title")
            genre = " ".join(f"CASE WHEN g{i} = '1' THEN '{g.replace(chr(39), chr(39) * 2)} ' ELSE '' END ||"
                             for i, g in enumerate(_GENRES_100K))
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {t}_canon AS SELECT trim(item) AS item,
                {title} AS title, coalesce(NULLIF(regexp_extract(release, '(\\d{{4}})$', 1), ''), {year}) AS year,
                NULLIF(trim({genre} ''), '') AS genres FROM {t}""")
            items = f"{t}_canon"
        if (p / "u.user").exists():
            t, _, b = read_text_table(con, p / "u.user", sep="|", header=False, skip_bad_lines=skip_bad_lines,
                                      columns=["user", "age", "gender", "occupation", "zip_code"], encoding="latin-1")
            skipped += b
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {t}_canon AS SELECT trim(user) AS user, trim(age) AS age,
                trim(gender) AS gender, trim(occupation) AS occupation, trim(zip_code) AS zip_code FROM {t}""")
            users = f"{t}_canon"
        fmt = "movielens-100k"
    elif (p / "ratings.dat").exists():
        inter, skipped = _ratings(con, p / "ratings.dat", "::", False, skip_bad_lines)
        items = None
        if (p / "movies.dat").exists():
            t, _, b = read_text_table(con, p / "movies.dat", sep="::", columns=["item", "raw_title", "raw_genres"],
                                      header=False, skip_bad_lines=skip_bad_lines, encoding="latin-1")
            skipped += b
            items = _movies(con, t, "item", "raw_title", "raw_genres")
        fmt = "movielens-dat"
    elif (p / "ratings.csv").exists():
        inter, skipped = _ratings(con, p / "ratings.csv", ",", True, skip_bad_lines)
        items = None
        if (p / "movies.csv").exists():
            t, mcols, b = read_csv_table(con, p / "movies.csv", skip_bad_lines=skip_bad_lines)
            skipped += b
            require_columns(mcols, ["movieId", "title", "genres"], path=str(p / "movies.csv"))
            items = _movies(con, t, '"movieId"', "title", "genres")
        fmt = "movielens-csv"
    else:
        raise DataError("no MovieLens files found (u.data, ratings.dat or ratings.csv)", file=str(p))
    return Canonical(interactions=inter, items=items, users=users, n_skipped=skipped, source=str(p), format=fmt,
                     text_template=text_template_for(con, items))


def _movies(con, t: str, item: str, title_col: str, genres: str) -> str:
    """The item table of movies.dat / movies.csv: title and year split, genres space-separated."""
    title, year = _title_year_sql(title_col)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {t}_canon AS SELECT trim({item}) AS item, {title} AS title,
        {year} AS year, replace({genres}, '|', ' ') AS genres FROM {t}""")
    return f"{t}_canon"
