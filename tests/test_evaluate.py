from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from aggregator.cli import cli
from aggregator.evaluate import EvalError, bcubed, pairwise, read_records, run_eval
from aggregator.settings import Settings

QUAKE = (
    "A magnitude 6.1 earthquake struck the mountain province before dawn, killing 14 people, officials said."
)


def test_bcubed_and_pairwise_by_hand() -> None:
    gold = {"a": 1, "b": 1, "c": 2}
    pred = {"a": "X", "b": "Y", "c": "Y"}
    b = bcubed(pred, gold)
    assert b.precision == pytest.approx(2 / 3) and b.recall == pytest.approx(2 / 3)
    assert b.f1 == pytest.approx(2 / 3)
    p = pairwise(pred, gold)
    assert (p.precision, p.recall, p.f1) == (0.0, 0.0, 0.0)


def test_perfect_and_all_singletons() -> None:
    gold = {"a": 1, "b": 1, "c": 2}
    assert bcubed(gold, gold).f1 == 1.0 and pairwise(gold, gold).f1 == 1.0
    single = {k: k for k in gold}
    assert bcubed(single, gold).precision == 1.0
    assert bcubed(single, gold).recall == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert pairwise(single, gold).precision == 1.0 and pairwise(single, gold).recall == 0.0


@given(st.dictionaries(st.text(max_size=3), st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1))
def test_metrics_are_bounded_and_perfect_on_gold(data: dict[str, tuple[int, int]]) -> None:
    gold = {k: v[0] for k, v in data.items()}
    pred = {k: v[1] for k, v in data.items()}
    for m in (bcubed(pred, gold), pairwise(pred, gold)):
        assert 0.0 <= m.precision <= 1.0 and 0.0 <= m.recall <= 1.0
    assert bcubed(gold, gold).f1 == 1.0


def labeled_file(tmp_path: Path) -> Path:
    recs = [
        # r1 and r2 are exact copies (one cluster); r3 is the same story in other words
        # that share nothing (a missed merge); r4 is another story.
        {
            "dataset": "tiny",
            "id": "r1",
            "outlet": "A",
            "title": "Quake kills 14",
            "text": QUAKE,
            "published": 1000,
            "link": None,
            "story": "s1",
        },
        {
            "dataset": "tiny",
            "id": "r2",
            "outlet": "B",
            "title": "Quake kills 14",
            "text": QUAKE,
            "published": 1100,
            "link": None,
            "story": "s1",
        },
        {
            "dataset": "tiny",
            "id": "r3",
            "outlet": "C",
            "title": "Tremor toll",
            "text": "Zebras galloped.",
            "published": 1200,
            "link": None,
            "story": "s1",
        },
        {
            "dataset": "tiny",
            "id": "r4",
            "outlet": "A",
            "title": "Parliament passes budget bill",
            "text": "Lawmakers voted late.",
            "published": None,
            "link": None,
            "story": "s2",
        },
        {
            "dataset": "other",
            "id": "o1",
            "outlet": None,
            "title": "Only record",
            "text": "",
            "published": None,
            "link": None,
            "story": "x",
        },
    ]
    path = tmp_path / "tiny.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return path


def test_run_eval_gives_hand_computed_scores(tmp_path: Path) -> None:
    results = {r.dataset: r for r in run_eval(labeled_file(tmp_path), Settings())}
    tiny = results["tiny"]
    assert tiny.assignments["r1"] == tiny.assignments["r2"]
    assert len({tiny.assignments[k] for k in ("r1", "r3", "r4")}) == 3
    b, p = tiny.scores["bcubed"], tiny.scores["pairwise"]
    assert b.precision == 1.0 and b.recall == pytest.approx(2 / 3) and b.f1 == pytest.approx(0.8)
    assert p.precision == 1.0 and p.recall == pytest.approx(1 / 3) and p.f1 == pytest.approx(0.5)
    assert results["other"].records == 1 and results["other"].scores["bcubed"].f1 == 1.0


def test_eval_cli_json_and_assignments(tmp_path: Path) -> None:
    out = tmp_path / "assign.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            str(labeled_file(tmp_path)),
            "--json",
            "--assignments",
            str(out),
            "--db",
            str(tmp_path / "unused.db"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    tiny = next(d for d in data["datasets"] if d["dataset"] == "tiny")
    assert tiny["bcubed"]["f1"] == pytest.approx(0.8)
    assert data["items_per_second"] > 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["id"] for line in lines} == {"r1", "r2", "r3", "r4", "o1"}
    by_id = {line["id"]: line["cluster"] for line in lines}
    assert by_id["r1"] == by_id["r2"] != by_id["r3"]


def test_eval_cli_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", str(labeled_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "0.800" in result.output and "items/s" in result.output
    # not a terminal: one progress line per dataset, no carriage-return counter
    assert "\r" not in result.stderr and "tiny: 4 items" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no records"),
        ("{bad json\n", "not JSON"),
        ('{"dataset": "d", "id": "1", "title": "t"}\n', "'story'"),
        ('{"dataset": "d", "id": "1", "title": "t", "story": "s", "published": "x"}\n', "published"),
        ('{"dataset": "d", "id": "1", "title": "t", "story": "s"}\n' * 2, "duplicate id"),
        ("[1]\n", "JSON object"),
    ],
)
def test_bad_eval_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(EvalError, match=message):
        read_records(path)
    result = CliRunner().invoke(cli, ["eval", str(path)])
    assert result.exit_code == 1 and message in result.output
