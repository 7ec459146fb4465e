"""The SQL report runner: any ``sql/*.sql`` file, on SQLite or PostgreSQL, as a table, CSV or PNG.

A report is one ``SELECT`` in a file named ``NAME.sql`` (see ``sql/README.md``): line 1 is a
``-- Title`` comment, an optional ``-- plot: x=COL y=COL by=COL kind=bar`` comment tells
:func:`render` how to draw it, and the bound parameters ``:since_s`` / ``:until_s`` (UTC epoch
seconds, half-open) select the time range. Nothing here knows any particular report, so energy,
carbon and cost reports are new ``.sql`` files only. ``dynamo report`` and the Airflow reports DAG
call these functions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import text

from dynamo_pipeline.store.db import Store

#: Where reports live: ``$DYNAMO_SQL_DIR`` or the repository's ``sql/`` folder.
DEFAULT_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

#: Bound when the caller gives no range: the whole representable span of epoch seconds.
_FAR_PAST_S, _FAR_FUTURE_S = 0, 2**53 // 1_000_000

FORMATS = ("table", "csv", "png")


class ReportError(ValueError):
    """A report cannot be found or rendered; the message says which and what to do."""


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    sql: str
    plot: dict[str, str] = field(default_factory=dict)


def sql_dir() -> Path:
    return Path(os.environ.get("DYNAMO_SQL_DIR") or DEFAULT_SQL_DIR)


def available() -> list[str]:
    """Names of the reports in :func:`sql_dir`, sorted."""
    return sorted(p.stem for p in sql_dir().glob("*.sql"))


def load(name: str) -> Report:
    """Read ``NAME.sql``: its title, plot hints and query."""
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise ReportError(f"no report {name!r} in {sql_dir()}; available: {', '.join(available()) or 'none'}")
    body = path.read_text()
    lines = body.splitlines()
    title = lines[0].removeprefix("--").strip() if lines and lines[0].startswith("--") else name
    plot: dict[str, str] = {}
    for ln in lines:
        m = re.match(r"--\s*plot:\s*(.*)", ln)
        if m:
            plot = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
    # comments go before the query reaches the driver: a `:name` inside one would count as a parameter
    query = "\n".join(ln for ln in lines if not ln.lstrip().startswith("--"))
    return Report(name, title, query, plot)


def run_report(store: Store, name: str, since_s: int | None = None, until_s: int | None = None) -> pd.DataFrame:
    """Run a report for [since_s, until_s) and return its rows as they come from the database."""
    rep = load(name)
    params = {"since_s": _FAR_PAST_S if since_s is None else int(since_s),
              "until_s": _FAR_FUTURE_S if until_s is None else int(until_s)}
    try:
        with store.engine.connect() as conn:
            return pd.read_sql(text(rep.sql), conn, params=params)
    except Exception as e:  # driver errors come in many types; name the file and the likely cause
        raise ReportError(f"report {name} ({sql_dir() / (name + '.sql')}) failed on {store.dialect}: {e}\n"
                          "check that the store is migrated (`dynamo db upgrade`) and the SQL is portable") from e


def _readable(df: pd.DataFrame) -> pd.DataFrame:
    """Epoch-second time columns (``*_start_s``, ``*_arrival_s``) as UTC timestamps, for people."""
    out = df.copy()
    for c in df.columns:
        if c.endswith(("_start_s", "_arrival_s")):
            out[c] = pd.to_datetime(df[c], unit="s", utc=True)
            out = out.rename(columns={c: c.removesuffix("_s")})
    return out


def render(df: pd.DataFrame, name: str, fmt: str, path: str | Path | None = None) -> Path | str:
    """Render a report's rows: ``table`` (returns the text), ``csv`` (raw values) or ``png`` (a plot
    following the report's ``-- plot:`` hints; needs ``path``). With ``path`` the output is written
    there and the path returned."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "csv":
        out = df.to_csv(index=False)
    elif fmt == "table":
        out = "(no rows in this range)" if df.empty else _readable(df).to_string(index=False, max_colwidth=60)
    else:
        if path is None:
            raise ReportError("--format png needs an output file: give --out PATH.png")
        return _plot(df, load(name), Path(path))
    if path is None:
        return out
    Path(path).write_text(out if out.endswith("\n") else out + "\n")
    return Path(path)


def _plot(df: pd.DataFrame, rep: Report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hints = rep.plot
    x, y = hints.get("x"), hints.get("y")
    if not x or not y:
        raise ReportError(f"report {rep.name} has no `-- plot: x=COL y=COL` line; add one to draw it")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if df.empty:
        ax.text(0.5, 0.5, "no rows in this range", ha="center", va="center", transform=ax.transAxes)
    else:
        data = _readable(df)
        x = x.removesuffix("_s") if x not in data.columns else x
        if x not in data.columns or y not in data.columns:
            raise ReportError(f"report {rep.name}: plot columns {x!r}/{y!r} are not in its result {list(df.columns)}")
        by = hints.get("by")
        table = (data.pivot_table(index=x, columns=by, values=y, aggfunc="sum", fill_value=0)
                 if by else data.groupby(x)[y].sum())
        if pd.api.types.is_datetime64_any_dtype(table.index):
            table.index = table.index.strftime("%Y-%m-%d %H:%M")
        table.plot(kind=hints.get("kind", "bar"), ax=ax, stacked=bool(by) and hints.get("kind", "bar") != "line")
        ax.set_ylabel(y)
    ax.set_title(rep.title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
