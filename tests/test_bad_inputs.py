"""Bad input through the real `sim` entry point: one table of cases (OBP style), each with the
exact one-line message and exit code expected, and never a traceback.

Exit codes: 0 ok (warnings on stderr), 2 bad input (``error: ...``), 130 Ctrl-C, 143 SIGTERM.
Cases needing a live process (signals, a busy catalog) are below the table.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A catalog with a 30-item synthetic world 'w', replay datasets 'r' and 'my-data', one finished run."""
    from simulator.commands.run import build_config
    from simulator.core import Catalog
    from simulator.core.loaders import load_into_catalog
    from simulator.core.synthetic import WorldConfig, write_world
    from simulator.engine.run import run_experiment

    d = tmp_path_factory.mktemp("bad")
    cat = str(d / "c.duckdb")
    common = ["--catalog", cat, "-q", "--artifacts", str(d / "art"), "--report-dir", str(d / "rep")]
    (d / "r.csv").write_text("user,item,ts\n" + "".join(f"{u},{(u * 7 + k) % 40},{k * 100 + u}\n"
                                                        for u in range(30) for k in range(10)))
    with Catalog(cat) as c:  # what `sim data synth`, `sim data load` and `sim run` do (they are tested below)
        write_world(c, "w", WorldConfig(n_users=60, n_items=30, seed=1))
        load_into_catalog(c, "csv", d / "r.csv", "r")
        load_into_catalog(c, "csv", d / "r.csv", "my-data")
        cfg = build_config(None, None, "popularity,itemknn", None,
                           {"dataset": "w", "n_requests": 200, "artifacts": str(d / "art")}, n_items=30)
        run_id = run_experiment(cfg, c, progress=False)
        ope_run = run_experiment(_ope_config(d / "art"), c, progress=False)
    _files(d)
    _ope_catalogs(d, cat, ope_run)
    return {"dir": d, "cat": cat, "common": common, "run": run_id, "ope_run": ope_run}


def _ope_config(art: Path):
    """An exploring logger (propensities) with one [ope] target, and an arm that is no target."""
    from _simdata import tiny_arm

    from simulator.engine.config import parse_config

    logger = {**tiny_arm("logger", "popularity", "control"),
              "explore": {"kind": "epsilon_greedy", "epsilon": 0.3, "pool": 10}}
    arms = [logger, tiny_arm("knn", "itemknn"), tiny_arm("other", "itemknn")]
    return parse_config({"dataset": "w", "n_requests": 200, "seed": 1, "artifacts": str(art), "arms": arms,
                         "ope": {"targets": ["knn"]}}, "test")


def _ope_catalogs(d: Path, cat: str, run: str) -> None:
    """Copies of the catalog whose OPE logs were damaged: a zero propensity, no target slates."""
    for name, sql in {"zero": "UPDATE exposures SET pscore = 0 WHERE run_id = $r AND arm = 'logger' AND request_id = "
                              "(SELECT min(request_id) FROM exposures WHERE run_id = $r AND arm = 'logger') "
                              "AND position = 1",
                      "noshadow": "DELETE FROM ope_slates WHERE run_id = $r AND arm = 'knn'"}.items():
        (d / f"{name}.duckdb").write_bytes(Path(cat).read_bytes())
        with duckdb.connect(str(d / f"{name}.duckdb")) as con:
            con.execute(sql, {"r": run})


def _files(d: Path) -> None:
    """Input files of the table below."""
    for name, body in {"nan": "1\t2\tnan\t100\n", "inf": "1\t2\t4\tinf\n", "neginf": "1\t2\t4\t-inf\n",
                       "negrating": "1\t2\t-5\t100\n", "negts": "1\t2\t4\t-7\n"}.items():
        (d / name).mkdir()
        (d / name / f"{name}.inter").write_text(INTER + "1\t3\t4\t99\n" + body)
    (d / "nots").mkdir()
    (d / "nots" / "nots.inter").write_text("user_id:token\titem_id:token\n1\t2\n1\t3\n")
    (d / "comma").mkdir()
    (d / "comma" / "comma.inter").write_text("user_id:token,item_id:token,timestamp:float\n1,2,3\n")
    (d / "quote.csv").write_text('user,it"em,ts\n1,2,3\n')
    for name, version in (("future", "99"), ("garbled", "v1")):  # catalogs this version cannot migrate
        with duckdb.connect(str(d / f"{name}.duckdb")) as con:
            con.execute("CREATE TABLE schema_meta(key VARCHAR PRIMARY KEY, value VARCHAR)")
            con.execute("INSERT INTO schema_meta VALUES ('version', ?)", [version])
    item = '{"1": {"title": "a"}}'
    for name, (inter, items) in {"ajbadjson": ('{"u": [1, 2,\n', item), "ajnotlist": ('{"u": 3}', item),
                                 "ajnotobj": ('{"u": [1]}', '{"1": "a"}'), "ajnoitem": ('{"u": [1]}', None)}.items():
        (d / name).mkdir()
        (d / name / f"{name}.inter.json").write_text(inter)
        if items is not None:
            (d / name / f"{name}.item.json").write_text(items)
    (d / "ok.csv").write_text("user,item,ts\n1,2,3\n2,2,4\n")
    (d / "typo.toml").write_text('dataset = "w"\nn_requests = 10\n[[arms]]\nname = "c"\nrole = "control"\n'
                                 'channels = [{policy = "popularity", quota = 20, wieght = 2.0}]\n'
                                 '[[arms]]\nname = "t"\nchannels = [{policy = "itemknn", quota = 20}]\n')
    arm = 'channels = [{policy = "popularity", quota = 20}]\n'
    for name, roles in {"twoctl": ["control", "control"], "noctl": ["treatment", "treatment"],
                        "onearm": ["control"]}.items():
        (d / f"{name}.toml").write_text('dataset = "w"\nn_requests = 10\n' + "".join(
            f'[[arms]]\nname = "a{i}"\nrole = "{r}"\n{arm}' for i, r in enumerate(roles)))
    (d / "items.csv").write_text("item,title\n2,a\n")
    (d / "esc.csv").write_text("user,i\x1b]0;pwned\x07,ts\n1,2,3\n")
    (d / "evil.json").write_text(json.dumps({"metrics": [
        {"name": "x", "num": "(SELECT count(*) FROM read_csv('/etc/passwd'))"}]}))
    (d / "evil2.json").write_text(json.dumps({"metrics": [
        {"name": "x", "num": "clicks) FROM runs; DROP TABLE runs; SELECT (1"}]}))


# (case, argv (CAT, DIR, RUN, OPERUN, COMMON are filled in), exit code, regex of the one stderr line that matters)
CASES = [
    # 2. a dataset name is never replaced by accident
    ("reload without --replace", ["data", "synth", "--name", "w", "--users", "60", "--items", "30", "--catalog", "CAT"],
     2, r"^error: dataset 'w' already exists in catalog .*c\.duckdb; add --replace to overwrite it$"),
    ("load over a name without --replace", ["data", "load", "csv", "DIR/ok.csv", "--name", "r", "--catalog", "CAT"],
     2, r"^error: dataset 'r' already exists in catalog .*c\.duckdb; add --replace to overwrite it$"),
    # amazon-json pairs: one line naming the file (and line or field)
    ("amazon-json: bad JSON", ["data", "load", "amazon-json", "DIR/ajbadjson", "--name", "x", "--catalog", "CAT"],
     2, r"^error: .*ajbadjson\.inter\.json:2: not valid JSON: .*$"),
    ("amazon-json: not a list", ["data", "load", "amazon-json", "DIR/ajnotlist", "--name", "x", "--catalog", "CAT"],
     2, r"^error: .*ajnotlist\.inter\.json, field 'u': user 'u': expected a list of item ids$"),
    ("amazon-json: item not an object", ["data", "load", "amazon-json", "DIR/ajnotobj", "--name", "x", "--catalog",
                                         "CAT"], 2,
     r"^error: .*ajnotobj\.item\.json, field '1': item '1': expected an object of text fields$"),
    ("amazon-json: no item file", ["data", "load", "amazon-json", "DIR/ajnoitem", "--name", "x", "--catalog", "CAT"],
     2, r"^error: .*ajnoitem: expected exactly one \*\.inter\.json and one \*\.item\.json, found: "
        r"ajnoitem\.inter\.json$"),
    # 3. bad values
    ("NaN rating", ["data", "load", "recbole", "DIR/nan", "--name", "x", "--catalog", "CAT"], 2,
     r"^error: .*nan\.inter:3, field 'rating:float': value 'nan' is not a finite number: timestamps and ratings "
     r"must be finite and >= 0 \(use --skip-bad-lines to skip\)$"),
    ("inf timestamp", ["data", "load", "recbole", "DIR/inf", "--name", "x", "--catalog", "CAT"], 2,
     r"^error: .*inf\.inter:3, field 'timestamp:float': value 'inf' is not a finite number: .*$"),
    ("-inf timestamp", ["data", "load", "recbole", "DIR/neginf", "--name", "x", "--catalog", "CAT"], 2,
     r"^error: .*neginf\.inter:3, field 'timestamp:float': value '-inf' is not a finite number: .*$"),
    ("negative rating", ["data", "load", "recbole", "DIR/negrating", "--name", "x", "--catalog", "CAT"], 2,
     r"^error: .*negrating\.inter:3, field 'rating:float': value '-5' is negative: timestamps and ratings must "
     r"be finite and >= 0 \(use --skip-bad-lines to skip\)$"),
    ("negative timestamp", ["data", "load", "recbole", "DIR/negts", "--name", "x", "--catalog", "CAT"], 2,
     r"^error: .*negts\.inter:3, field 'timestamp:float': value '-7' is negative: .*$"),
    ("no timestamp column", ["data", "load", "recbole", "DIR/nots", "--name", "nots", "--catalog", "CAT"], 0,
     r"^warning: .*nots\.inter: no timestamp column: using line order as time \(line N = N seconds\); "
     r"replay runs and temporal splits then follow the file order$"),
    ("comma-separated .inter", ["data", "load", "recbole", "DIR/comma", "--name", "x", "--catalog", "CAT"], 2,
     r"^error: .*comma\.inter, field 'item_id': missing column\(s\) item_id; found "
     r"user_id:token,item_id:token,timestamp:float \(the header is one column: the file looks comma-separated; "
     r"RecBole atomic files are tab-separated\)$"),
    ("text signal out of range", ["data", "synth", "--name", "x", "--text-signal", "1.5", "--catalog", "CAT"], 2,
     r"^error: bad option text_signal: Input should be less than or equal to 1$"),
    ("semi-synthetic world from an unknown dataset", ["data", "synth", "--name", "x", "--from", "nope",
                                                      "--catalog", "CAT"], 2,
     r"^error: unknown dataset 'nope' in catalog .*c\.duckdb \(known: .*\)$"),
    ("names sharing a schema", ["data", "synth", "--name", "W", "--users", "60", "--items", "30", "--catalog", "CAT"],
     2, r"^error: dataset name 'W' clashes with existing dataset 'w' \(both are stored as ds_w\); choose another name$"),
    ("'my_data' next to 'my-data'", ["data", "load", "csv", "DIR/ok.csv", "--name", "my_data", "--catalog", "CAT"], 2,
     r"^error: dataset name 'my_data' clashes with existing dataset 'my-data' \(both are stored as ds_my_data\); "
     r"choose another name$"),
    ("quote in a column name", ["data", "load", "csv", "DIR/quote.csv", "--name", "x", "--catalog", "CAT"], 2,
     r"""^error: .*quote\.csv:1, field 'it"em': column name 'it"em' contains a double quote or a control """
     r"character; rename it$"),
    ("hostile table name", ["hllm", "embed-items", "--model", "DIR/none", "--out", "DIR/t", "--duckdb",
                            "x AS SELECT 1; DROP TABLE runs; --", "--catalog", "CAT"], 2,
     r"^error: invalid table name 'x AS SELECT 1; DROP TABLE runs; --': use letters, digits and '_' \(not "
     r"starting with a digit\)$"),
    ("catalog table as a target", ["hllm", "embed-items", "--model", "DIR/none", "--out", "DIR/t", "--duckdb", "runs",
                                   "--catalog", "CAT"], 2,
     r"^error: table name 'runs' is taken by the catalog itself; choose another name$"),
    ("unknown ANN index kind", ["hllm", "embed-items", "--model", "DIR/none", "--out", "DIR/t", "--index", "annoy"],
     2, r"^error: retrieval config index='annoy': Input should be 'auto', 'exact', 'ivf' or 'hnsw'$"),
    ("bad ANN setting", ["hllm", "embed-items", "--model", "DIR/none", "--out", "DIR/t", "--retrieval", "nprobe=0"],
     2, r"^error: retrieval config nprobe=0: Input should be greater than or equal to 1$"),
    # 4. run options, runs left behind, reports
    ("negative seed", ["run", "--arms", "popularity,itemknn", "--data", "w", "--seed", "-1", "COMMON"], 2,
     r"^error: --seed -1: Input should be greater than or equal to 0$"),
    ("seed past BIGINT", ["run", "--arms", "popularity,itemknn", "--data", "w", "--seed", str(2**70), "COMMON"], 2,
     r"^error: --seed 1180591620717411303424: Input should be less than or equal to 9223372036854775807$"),
    ("misspelt user model", ["run", "--arms", "popularity,itemknn", "--data", "w", "--user-model", "lerned", "COMMON"],
     2, r"^error: --user-model 'lerned': unknown user_model 'lerned' \(choose from auto, world, replay, learned\); "
        r"did you mean 'learned'\?$"),
    ("zero requests", ["run", "--arms", "popularity,itemknn", "--data", "w", "-n", "0", "COMMON"], 2,
     r"^error: --requests 0: Input should be greater than or equal to 1$"),
    ("typo inside a channel", ["run", "--config", "DIR/typo.toml", "COMMON"], 2,
     r"^error: .*typo\.toml: arms\.0\.channels\.0: unknown field 'wieght' \(did you mean 'weight'\?\)$"),
    ("resume with other settings", ["run", "--resume", "RUN", "--requests", "5", "--catalog", "CAT"], 2,
     r"^error: --resume continues run RUN with its own settings; --requests cannot change it "
     r"\(start a new run to use other settings\)$"),
    ("resume an unknown run", ["run", "--resume", "nope", "--catalog", "CAT"], 2, r"^error: unknown run id 'nope'$"),
    ("Ray: nothing at the address", ["run", "--arms", "popularity,itemknn", "--data", "w", "-n", "10",
                                     "--ray-address", "127.0.0.1:1", "COMMON"], 2,
     r"^error: cannot reach a Ray cluster at 127\.0\.0\.1:1 \(connection refused\); check --ray-address: the "
     r"head's address is printed by `ray start --head` \(port 6379 by default\)$"),
    ("Ray: not an address", ["run", "--arms", "popularity,itemknn", "--ray-address", "nowhere", "COMMON"], 2,
     r"^error: --ray-address 'nowhere': expected HOST:PORT, e\.g\. 127\.0\.0\.1:6379 .*$"),
    ("30 items, default arms", ["run", "--arms", "popularity,itemknn", "--data", "w", "-n", "50", "COMMON"], 0,
     r"^note: dataset 'w' has 30 items: the default arms' channel quotas are capped at 30 \(set quotas with "
     r"--config for full control\)$"),
    ("more requests than the replay log", ["run", "--arms", "popularity,itemknn", "--data", "r", "-n", "100000",
                                           "COMMON"], 0,
     r"^warning: the replay log of 'r' holds only \d+ requests after the start cut \(replay_start_quantile 0\.8\): "
     r"serving \d+ of the 100,000 asked for$"),
    ("fewer requests than the replay log", ["run", "--arms", "popularity,itemknn", "--data", "r", "-n", "5",
                                            "COMMON"], 0,
     r"^warning: the replay log of 'r' holds [\d,]+ requests from [\d,]+ users after the start cut; this run serves "
     r"the first 5, which reach [\d,]+ of the [\d,]+ users \(--requests \d+ serves them all\)$"),
    ("report of a one-request run", ["run", "--arms", "popularity,itemknn", "--data", "w", "-n", "1", "COMMON"], 0,
     None),
    ("two control arms", ["run", "--config", "DIR/twoctl.toml", "COMMON"], 2,
     r"^error: .*twoctl\.toml: config: design 'ab' needs exactly one control arm and at least one treatment, got "
     r"roles \['control', 'control'\]$"),
    ("no control arm", ["run", "--config", "DIR/noctl.toml", "COMMON"], 2,
     r"^error: .*noctl\.toml: config: design 'ab' needs exactly one control arm .*\['treatment', 'treatment'\]$"),
    ("one arm", ["run", "--config", "DIR/onearm.toml", "COMMON"], 2,
     r"^error: .*onearm\.toml: config: design 'ab' needs exactly one control arm .*\['control'\]$"),
    ("interleaving A/A of one model", ["run", "--design", "interleave", "--treatment", "popularity", "--control",
                                       "popularity", "--data", "w", "-n", "30", "COMMON"], 0, None),
    ("query output is the catalog", ["query", "SELECT 1", "--output", "CAT", "--catalog", "CAT"], 2,
     r"^error: --output .*c\.duckdb is the catalog itself: choose another file$"),
    ("query output in a missing folder", ["query", "SELECT 1", "--format", "csv", "--output", "/nonexistent_dir/x.csv",
                                          "--catalog", "CAT"], 2,
     r"^error: --output /nonexistent_dir/x\.csv: folder /nonexistent_dir does not exist$"),
    ("query output exists", ["query", "SELECT 1", "--format", "csv", "--output", "DIR/ok.csv", "--catalog", "CAT"],
     2, r"^error: --output .*ok\.csv exists: add --force to overwrite it$"),
    ("query timeout not positive", ["query", "SELECT 1", "--timeout", "0", "--catalog", "CAT"], 2,
     r"^error: --timeout must be a positive number of seconds, got 0$"),
    ("item-map key with a quote", ["data", "load", "csv", "DIR/ok.csv", "--name", "im", "--items", "DIR/items.csv",
                                   "--item-map", 'item=item,ti"tle=title', "--catalog", "CAT"], 2,
     r"^error: --item-map, field 'ti\"tle': column name 'ti\"tle' contains a double quote or a control character; "
     r"rename it$"),
    ("terminal escape in a header", ["data", "load", "csv", "DIR/esc.csv", "--name", "esc", "--catalog", "CAT"], 2,
     r"^error: .*esc\.csv:1, field 'i\\x1b\]0;pwned\\x07': column name .* rename it$"),
    ("unknown option", ["run", "--sed", "1", "COMMON"], 2,
     r"^error: No such option: --sed (\(Possible options: .*\) )?\(see `sim run --help`\)$"),
    ("not a number", ["run", "-n", "many", "COMMON"], 2,
     r"^error: Invalid value for '--requests' / '-n': .* \(see `sim run --help`\)$"),
    ("unknown run in a report", ["report", "nope", "--catalog", "CAT", "--out", "DIR/rep"], 2,
     r"^error: unknown run id 'nope' \(recent runs: .*\)$"),
    # a catalog whose schema version cannot be migrated (writing and read-only opens)
    ("catalog of a newer schema version", ["runs", "list", "--catalog", "DIR/future.duckdb"], 2,
     r"^error: catalog .*future\.duckdb has schema version 99, newer than this hllm-sim's \(4\): "
     r"upgrade hllm-sim to open it$"),
    ("query a catalog of a newer schema version", ["query", "SELECT 1", "--catalog", "DIR/future.duckdb"], 2,
     r"^error: catalog .*future\.duckdb has schema version 99, newer than this hllm-sim's \(4\): "
     r"upgrade hllm-sim to open it$"),
    ("catalog with an unreadable schema version", ["data", "list", "--catalog", "DIR/garbled.duckdb"], 2,
     r"^error: catalog .*garbled\.duckdb has an unreadable schema version 'v1': use a new catalog$"),
    # 5. off-policy estimates (sim ope)
    ("OPE of a run without propensities", ["ope", "--logs", "RUN", "--target", "itemknn", "--catalog", "CAT"], 2,
     r"^error: run 'RUN' has no propensities: no arm logged with `explore` \(give the logging arm an explore block "
     r"and name the targets in \[ope\]\)$"),
    ("OPE of an arm unknown to the run", ["ope", "--logs", "RUN", "--target", "nope", "--catalog", "CAT"], 2,
     r"^error: run 'RUN' has no arm 'nope' \(arms: itemknn, popularity\)$"),
    ("OPE of an unknown run", ["ope", "--logs", "nope", "--target", "x", "--catalog", "CAT"], 2,
     r"^error: unknown run id 'nope' \(recent runs: .*\)$"),
    ("OPE with a zero propensity", ["ope", "--logs", "OPERUN", "--target", "knn", "--catalog", "DIR/zero.duckdb"], 2,
     r"^error: run 'OPERUN': arm 'logger' logged a zero propensity \(request \d+, position 1\): off-policy "
     r"estimates need a positive propensity for every logged action$"),
    ("OPE of an arm that is no [ope] target", ["ope", "--logs", "OPERUN", "--target", "other", "--catalog", "CAT"],
     2, r"^error: run 'OPERUN' did not record arm 'other''s slates on the logged requests \(name it in the run "
     r"config's \[ope\] targets\)$"),
    ("OPE of a target whose slates are missing", ["ope", "--logs", "OPERUN", "--target", "knn", "--catalog",
                                                  "DIR/noshadow.duckdb"], 2,
     r"^error: run 'OPERUN' did not record arm 'knn''s slates on the logged requests"),
    ("OPE from an arm without propensities", ["ope", "--logs", "OPERUN", "--target", "knn", "--logging", "other",
                                              "--catalog", "CAT"], 2,
     r"^error: run 'OPERUN': arm 'other' logged no propensities \(arms that did: logger\)$"),
    ("OPE of the logging arm itself", ["ope", "--logs", "OPERUN", "--target", "logger", "--catalog", "CAT"], 2,
     r"^error: run 'OPERUN': arm 'logger' is the logging arm itself \(its CTR is the logged CTR\); choose another "
     r"target$"),
    # 1. user SQL in an analysis config
    ("subquery in a metric", ["report", "RUN", "--analysis-config", "DIR/evil.json", "--catalog", "CAT",
                              "--out", "DIR/rep"], 2,
     r"^error: metric 'x' num: \"\(SELECT count\(\*\) FROM read_csv\('/etc/passwd'\)\)\" is not one SQL expression "
     r"over v_user_metrics columns \(subqueries are not allowed\)$"),
    ("statements in a metric", ["report", "RUN", "--analysis-config", "DIR/evil2.json", "--catalog", "CAT",
                                "--out", "DIR/rep"], 2,
     r"^error: metric 'x' num: 'clicks\) FROM runs; DROP TABLE runs; SELECT \(1' is not one SQL expression over "
     r"v_user_metrics columns \(it contains 3 statements\)$"),
]


def _argv(args: list[str], w: dict) -> list[str]:
    out: list[str] = []
    for a in args:
        if a == "COMMON":
            out += w["common"]
        else:
            a = a.replace("OPERUN", w["ope_run"])
            out.append(a.replace("CAT", w["cat"]).replace("DIR", str(w["dir"])).replace("RUN", w["run"]))
    return out


@pytest.mark.parametrize("case,args,code,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_table(world, sim, case, args, code, pattern):
    runs_before = _runs(world["cat"])
    r = sim(*_argv(args, world))
    text = r.out + r.err
    assert "Traceback" not in text and "Exception:" not in text, text
    assert r.code == code, f"{case}: exit {r.code}\n{text}"
    if pattern is not None:
        pattern = pattern.replace("OPERUN", re.escape(world["ope_run"])).replace("RUN", re.escape(world["run"]))
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        assert any(re.match(pattern, ln) for ln in lines), f"{case}: no line matches {pattern!r}:\n{r.err}"
    assert "\x1b" not in r.err  # a user's string never reaches the terminal raw
    if code == 2:
        assert len([ln for ln in r.err.splitlines() if ln.strip()]) == 1, r.err  # one line, nothing else
        assert _runs(world["cat"]) == runs_before  # a refused command leaves no run behind
    assert not any(s == "running" for _, s in _runs(world["cat"]))


def _runs(cat: str) -> list[tuple]:
    con = duckdb.connect(cat, read_only=True)
    try:
        return con.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()


def test_power_from_a_finished_run(world, sim):
    """sim power --from-run plans at the run's observed variance (it once crashed on a bad call)."""
    r = sim("power", "--from-run", world["run"], "--mde", "0.1", "--catalog", world["cat"])
    assert r.code == 0 and "Traceback" not in r.err, r.err
    assert r.out.startswith(f"ctr (primary metric of run {world['run']}, ") and "users per arm: " in r.out, r.out
    r = sim("power", "--from-run", "no-such-run", "--mde", "0.1", "--catalog", world["cat"])
    assert r.code == 2 and len([ln for ln in r.err.splitlines() if ln.strip()]) == 1, r.err


def test_tiny_run_reports_without_crashing(world, sim):
    r = sim("run", "--arms", "popularity,itemknn", "--data", "w", "-n", "1", *world["common"])
    assert r.code == 0 and "analysis report failed" not in r.err, r.err
    assert "has zero users" in r.out  # metrics that cannot be estimated say why
    rid = re.search(r"^run (\S+)$", r.out, re.M).group(1)
    r = sim("report", rid, "--catalog", world["cat"], "--out", str(world["dir"] / "rep"))
    assert r.code == 0 and "report:" in r.out, r.err


def test_report_of_a_run_left_running_says_so(world, sim, tmp_path):
    cat = str(tmp_path / "c.duckdb")
    (tmp_path / "c.duckdb").write_bytes(Path(world["cat"]).read_bytes())
    with duckdb.connect(cat) as con:  # what `kill -9` of a running `sim run` leaves behind
        con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", [world["run"]])
    r = sim("report", world["run"], "--catalog", cat, "--out", str(tmp_path / "rep"))
    assert r.code == 0
    assert (f"warning: run {world['run']} did not finish: it is marked 'running' but no process is writing it "
            f"(it was killed); the numbers cover only the 200 requests stored of 200 asked for; continue it with "
            f"`sim run --resume {world['run']}`") in r.err
    md = (tmp_path / "rep" / world["run"] / "report.md").read_text()
    assert "WARNING: run" in md.split("## Effects")[0]


def test_replaced_dataset_keeps_old_reports_and_blocks_resume(world, sim, tmp_path):
    cat = str(tmp_path / "c.duckdb")
    (tmp_path / "c.duckdb").write_bytes(Path(world["cat"]).read_bytes())
    rep = ["--catalog", cat, "--out", str(tmp_path / "rep")]
    before = sim("report", world["run"], *rep)
    assert before.code == 0 and "warning" not in before.err, before.err
    r = sim("data", "synth", "--name", "w", "--users", "60", "--items", "30", "--seed", "2", "--replace",
                "--catalog", cat)
    assert r.code == 0, r.err
    after = sim("report", world["run"], *rep)
    assert after.code == 0 and after.out == before.out  # same table: the run kept its own snapshot
    assert re.match(r"^warning: dataset 'w' has changed since the run \(content hash \w+ -> \w+\); this report uses "
                    r"the run's own snapshot of it, so its numbers are those of the data the run used$", after.err)
    with duckdb.connect(cat) as con:
        con.execute("UPDATE runs SET status = 'incomplete' WHERE run_id = ?", [world["run"]])
    r = sim("run", "--resume", world["run"], "--catalog", cat, "-q")
    assert r.code == 2 and re.match(rf"^error: cannot resume run {re.escape(world['run'])}: dataset 'w' has changed "
                                    r"since the run started \(content hash \w+ -> \w+\); resuming would mix two "
                                    r"datasets: start a new run instead$", r.err), r.err


def _start_run(world, cat: str, tmp_path: Path) -> subprocess.Popen:
    """A long `sim run` on ``cat``, returned once it writes events (its note file exists)."""
    note = Path(cat + ".run.json")
    p = subprocess.Popen([sys.executable, "-m", "cli", "run", "--arms", "popularity,itemknn", "--data", "w",
                          "-n", "100000000", "--catalog", cat, "-q", "--artifacts", str(world["dir"] / "art"),
                          "--report-dir", str(tmp_path / "rep")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    deadline = time.time() + 120
    while not note.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert note.exists(), p.communicate()[1] if p.poll() is not None else "no run note"
    return p


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_exit_code_and_resumable_run(world, tmp_path, sig, code, word):
    cat = str(tmp_path / "c.duckdb")
    (tmp_path / "c.duckdb").write_bytes(Path(world["cat"]).read_bytes())
    p = _start_run(world, cat, tmp_path)
    rid = json.loads(Path(cat + ".run.json").read_text())["run_id"]
    if sig == signal.SIGINT:  # 6. while it runs, readers get one line naming the run
        q = subprocess.run([sys.executable, "-m", "cli", "query", "SELECT 1", "--catalog", cat], capture_output=True,
                           text=True, cwd=ROOT)
        assert q.returncode == 2 and q.stderr.startswith(f"error: catalog {cat} is busy: run {rid} (process "
                                                         f"{p.pid}, started "), q.stderr
        assert q.stderr.strip().endswith(f"continue later with `sim run --resume {rid}`")
        assert q.stderr.count("\n") == 1
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert f"{word}: run {rid} kept as incomplete; continue with `sim run --resume {rid}`" in err
    assert "Traceback" not in err
    assert _runs(cat)[-1] == (rid, "incomplete") or (rid, "incomplete") in _runs(cat)
    assert not Path(cat + ".run.json").exists()


def test_ray_auth_token_and_silent_port_are_one_line(monkeypatch):
    """5. a cluster that wants a token, and a port that accepts but never answers (Ray mocked)."""
    import socket
    import threading

    import ray

    from simulator.core.errors import ConfigError
    from simulator.engine import raycluster

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    addr = f"127.0.0.1:{srv.getsockname()[1]}"
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def needs_token(**kw):
        raise ray.exceptions.AuthenticationError("Token authentication is enabled but no authentication token "
                                                 "was found")

    monkeypatch.setattr(ray, "init", needs_token)
    with pytest.raises(ConfigError) as e:
        raycluster.init_ray(addr)
    assert str(e.value) == (f"the Ray cluster at {addr} requires an authentication token and none is set: set "
                            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH); `ray get-auth-token` "
                            "on the head prints the token")
    release = threading.Event()
    monkeypatch.setattr(ray, "init", lambda **kw: release.wait(30))
    monkeypatch.setenv("SIM_RAY_CONNECT_TIMEOUT_S", "0.5")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^the Ray cluster at {addr} did not answer within 0\.5 s: the port is "
                                          r"open but it does not look like a Ray head; check --ray-address"):
        raycluster.init_ray(addr)
    assert time.perf_counter() - t0 < 10
    release.set()
    srv.close()


def test_no_run_is_left_running(world, sim, monkeypatch, tmp_path):
    """A runtime that cannot start leaves no run row; an error mid-run leaves 'failed' (resumable)."""
    from simulator.core import Catalog
    from simulator.core.errors import ConfigError
    from simulator.engine import run as run_mod
    from simulator.engine.config import parse_config

    class Broken:
        def __init__(self, *a, **kw):
            raise ConfigError("cannot start a local Ray instance: boom")

    cat = str(tmp_path / "c.duckdb")
    (tmp_path / "c.duckdb").write_bytes(Path(world["cat"]).read_bytes())
    before = _runs(cat)
    monkeypatch.setitem(run_mod.RUNTIMES, "local", Broken)
    r = sim("run", "--arms", "popularity,itemknn", "--data", "w", "-n", "20", "--catalog", cat, "-q",
            "--artifacts", str(world["dir"] / "art"), "--report-dir", str(tmp_path / "rep"))
    assert r.code == 2 and r.err.strip().endswith("error: cannot start a local Ray instance: boom"), r.err
    assert _runs(cat) == before
    monkeypatch.undo()

    def crash(batch_no, runtime):
        raise RuntimeError("a bug in a policy")

    cfg = parse_config({"dataset": "w", "n_requests": 50, "artifacts": str(world["dir"] / "art"),
                        "arms": [{"name": "c", "role": "control", "channels": [{"policy": "popularity", "quota": 20}],
                                  "slate_size": 5},
                                 {"name": "t", "channels": [{"policy": "itemknn", "quota": 20}], "slate_size": 5}]})
    with Catalog(cat) as c:
        with pytest.raises(RuntimeError, match="a bug in a policy"):
            run_mod.run_experiment(cfg, c, progress=False, on_batch=crash)
        assert c.con.execute("SELECT status FROM runs ORDER BY started_at DESC LIMIT 1").fetchall() == [("failed",)]


def test_catalog_from_the_previous_version_still_works(world, sim, tmp_path):
    """A catalog written before content hashes and run snapshots: reports (with a note), queries,
    new runs (the migration adds what is missing)."""
    cat = str(tmp_path / "c.duckdb")
    (tmp_path / "c.duckdb").write_bytes(Path(world["cat"]).read_bytes())
    with duckdb.connect(cat) as con:  # a version-0 catalog: no schema_meta (it is migrated on open)
        con.execute("ALTER TABLE datasets DROP COLUMN content_hash")
        con.execute("ALTER TABLE requests DROP COLUMN nearline_ms")
        con.execute("ALTER TABLE truth DROP COLUMN se")
        con.execute("ALTER TABLE requests DROP COLUMN history_len")
        con.execute("DROP TABLE run_datasets; DROP TABLE run_items; DROP TABLE run_users; DROP TABLE schema_meta")
    r = sim("report", world["run"], "--catalog", cat, "--out", str(tmp_path / "rep"))
    assert r.code == 0 and r.err.startswith(f"warning: run {world['run']} predates per-run dataset snapshots"), r.err
    assert sim("query", "SELECT count(*) FROM v_user_metrics", "--catalog", cat).code == 0
    r = sim("run", "--arms", "popularity,itemknn", "--data", "w", "-n", "20", "--catalog", cat, "-q",
            "--artifacts", str(world["dir"] / "art"), "--report-dir", str(tmp_path / "rep"))
    assert r.code == 0, r.err
    with duckdb.connect(cat, read_only=True) as con:
        h = con.execute("SELECT content_hash FROM datasets WHERE name = 'w'").fetchall()[0][0]
        assert h and con.execute("SELECT count(*) FROM run_datasets WHERE content_hash = ?", [h]).fetchall()[0][0] == 1
        assert con.execute("SELECT value FROM schema_meta WHERE key = 'version'").fetchall() == [("4",)]
        old, new = con.execute("SELECT count(*) FILTER (WHERE nearline_ms IS NULL), count(*) FILTER (WHERE "
                               "nearline_ms IS NOT NULL) FROM requests").fetchall()[0]
        assert old > 0 and new > 0  # the old run's requests say 'not recorded', the new run's have it
        old, new = con.execute("SELECT count(*) FILTER (WHERE se IS NULL), count(*) FILTER (WHERE se IS NOT NULL) "
                               "FROM truth").fetchall()[0]
        assert old > 0 and new > 0  # the old run's passes have no SE of their own, the new run's have it
        old, new = con.execute("SELECT count(*) FILTER (WHERE history_len IS NULL), count(*) FILTER (WHERE "
                               "history_len IS NOT NULL) FROM requests").fetchall()[0]
        assert old > 0 and new > 0  # the old run's latency test is at the same call size only


def test_run_failed_by_a_negative_seed_before_this_fix(world, sim, tmp_path):
    """Older versions stored `--seed -1` runs as 'failed'; resuming one says why it cannot be."""
    cat = str(tmp_path / "c.duckdb")
    (tmp_path / "c.duckdb").write_bytes(Path(world["cat"]).read_bytes())
    with duckdb.connect(cat) as con:
        con.execute("""UPDATE runs SET status = 'failed', config_json = replace(config_json, '"seed": 0', '"seed": -1')
                       WHERE run_id = ?""", [world["run"]])
    r = sim("run", "--resume", world["run"], "--catalog", cat)
    assert r.code == 2 and r.err == (f"error: cannot resume run {world['run']}: its stored config is not valid now "
                                     "(seed: Input should be greater than or equal to 0); start a new run\n"), r.err


def test_a_refused_run_leaves_no_catalog_file(world, sim, tmp_path):
    """Exit 2 writes nothing: not even the catalog file the command would have created."""
    fresh = tmp_path / "fresh.duckdb"
    r = sim("run", "--data", "nope", "--catalog", str(fresh), "-q")
    assert r.code == 2 and "unknown dataset" in r.err
    assert not fresh.exists() and not (tmp_path / "fresh.duckdb.wal").exists()
    r = sim("run", "--seed", "-1", "--catalog", str(fresh), "-q")
    assert r.code == 2 and not fresh.exists()


def test_report_of_a_killed_run_counts_the_stored_requests(world, sim):
    """Issue 21 item 4: a run marked 'running' (its process was killed) reports the requests it
    stored, and report.json is written (no NaT in it)."""
    import duckdb

    with duckdb.connect(world["cat"]) as con:
        con.execute("UPDATE runs SET status = 'running', finished_at = NULL, n_requests = 0 WHERE run_id = ?",
                    [world["run"]])
    try:
        r = sim("report", world["run"], "--catalog", world["cat"], "--out", str(world["dir"] / "killed"))
        assert r.code == 0, r.err
        assert "the 200 requests stored of 200 asked for" in r.out + r.err
        js = json.loads((world["dir"] / "killed" / world["run"] / "report.json").read_text())
        assert js["run"]["finished_at"] is None
    finally:
        with duckdb.connect(world["cat"]) as con:
            con.execute("UPDATE runs SET status = 'complete' WHERE run_id = ?", [world["run"]])


def test_resume_says_what_it_did_and_that_a_complete_run_is_complete(world, sim):
    """Issue 21 item 11: a run made without its report phase gets it on --resume; a second
    --resume says the run is complete and changes nothing."""
    args = ("run", "--resume", world["run"], "--catalog", world["cat"], "--report-dir", str(world["dir"] / "res"))
    first = sim(*args)
    assert first.code == 0
    second = sim(*args)
    assert second.code == 0 and second.out == ""
    assert second.err.strip() == (f"run {world['run']} is already complete: nothing to resume (its report: "
                                  f"`sim report {world['run']} --out {world['dir'] / 'res'}`)")
