"""`supportflow analytics report`: the report over a chdb folder, its chart, and its argument errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.clickhouse import ChdbEventStore
from pipelines.cli import app
from pipelines.evaluation.analytics_report import parse_moment
from tests.support.analytics_events import (
    EXPECTED_WITH_FEEDBACK,
    KNOWN_CONTENT_GAP_GROUPS,
    KNOWN_GAPS,
    SINCE,
    UNTIL,
    assert_report_matches,
    content_gap_events,
    knowledge_gap_events,
    known_events,
    known_feedback,
)

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WINDOW = ["--since", "2025-03-01T00:00:00Z", "--until", "2025-03-02"]


@pytest.fixture(autouse=True)
def _no_server_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLICKHOUSE_URL", "SUPPORTFLOW_CLICKHOUSE_URL", "SUPPORTFLOW_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder whose chdb holds the known events and feedback, closed as a stopped stack leaves it."""

    async def fill() -> None:
        store = ChdbEventStore(tmp_path / "data" / "chdb")
        await store.migrate()
        await store.insert([*known_events(), *known_feedback()])
        await store.close()

    asyncio.run(fill())
    return tmp_path / "data"


def test_report_shows_the_knowledge_gaps_most_frequent_first_in_text_and_json(tmp_path: Path) -> None:
    async def fill() -> None:
        store = ChdbEventStore(tmp_path / "data" / "chdb")
        await store.migrate()
        await store.insert([*known_events(), *knowledge_gap_events()])
        await store.close()

    asyncio.run(fill())
    arguments = ["analytics", "report", "--no-png", "--data-dir", str(tmp_path / "data"), *WINDOW]
    text = runner.invoke(app, arguments, env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    section = text.stdout[text.stdout.index("knowledge gaps") :]
    # "[downtown]" is the customer's text, not rich markup
    mowers, pay, cafe = (section.index(s) for s in ("Do you sell lawn mowers?", "<PHONE_NUMBER>", "café [downtown]"))
    assert mowers < pay < cafe, section
    as_json = runner.invoke(app, [*arguments, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["knowledge_gaps"] == KNOWN_GAPS


def test_report_shows_the_content_gaps_per_domain_with_rewordings_grouped_by_meaning(tmp_path: Path) -> None:
    async def fill() -> None:
        store = ChdbEventStore(tmp_path / "data" / "chdb")
        await store.migrate()
        await store.insert(content_gap_events())
        await store.close()

    asyncio.run(fill())
    png = tmp_path / "chart.png"
    arguments = ["analytics", "report", "--png", str(png), "--data-dir", str(tmp_path / "data"), *WINDOW]
    text = runner.invoke(app, arguments, env={"COLUMNS": "220"})
    assert text.exit_code == 0, text.output
    out = text.stdout
    assert "knowledge base by domain" in out and "articles that answered" in out
    gaps = out[out.index("knowledge gaps") : out.index("answered with low confidence")]
    assert "Can I buy a lawn mower from you?" in gaps and "Do you sell lawn mowers?" in gaps
    assert "by meaning: sentence-transformers/all-MiniLM-L6-v2" in " ".join(gaps.split())
    weak = out[out.index("answered with low confidence") :]
    assert "How long do refunds take?" in weak and "Where do I send a return?" not in weak
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    as_json = json.loads(runner.invoke(app, [*arguments, "--no-png", "--json"]).stdout)
    assert as_json["knowledge_gaps"] == KNOWN_CONTENT_GAP_GROUPS
    assert [d["domain"] for d in as_json["knowledge"]["by_domain"]] == ["shop", "billing"]
    wide = runner.invoke(app, [*arguments, "--no-png", "--json", "--low-confidence-margin", "0.5"])
    assert len(json.loads(wide.stdout)["knowledge"]["low_confidence"]) == 2


def test_report_json_prints_the_known_metrics_and_writes_a_png(data_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "chart.png"
    result = runner.invoke(
        app, ["analytics", "report", "--json", "--data-dir", str(data_dir), "--png", str(png), *WINDOW]
    )
    assert result.exit_code == 0, result.output
    assert_report_matches(json.loads(result.stdout), EXPECTED_WITH_FEEDBACK)
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000  # a 1600x900 chart, not an empty file


def test_report_as_text_shows_the_headline_and_no_png_writes_none(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default chart path is in the working directory
    result = runner.invoke(app, ["analytics", "report", "--no-png", "--data-dir", str(data_dir), *WINDOW])
    assert result.exit_code == 0, result.output
    assert "autonomous resolution" in result.stdout and "70.0%" in result.stdout
    assert "customer_requested_human" in result.stdout and "$0.0200" in result.stdout
    assert "CSAT by channel" in result.stdout and "3.62 / 5" in result.stdout and "62.5%" in result.stdout
    assert "get_refund" in result.stdout and "cancel_order" in result.stdout and "human handle time" in result.stdout
    assert not (tmp_path / "analytics-report.png").exists()


def test_report_as_text_has_a_language_models_section(data_dir: Path) -> None:
    result = runner.invoke(
        app, ["analytics", "report", "--no-png", "--data-dir", str(data_dir), *WINDOW], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    section = result.stdout[result.stdout.index("language models") :]
    for shown in ("cost per conversation", "$0.0200", "turns with a language model", "96.2%", "42,000 / 7,000"):
        assert shown in section, (shown, section)
    rows = {line.split("│")[1].strip(): line for line in section.splitlines() if line.count("│") > 3}
    assert "76.9%" in rows["small"] and "24,000" in rows["small"] and "$0.0800" in rows["small"]
    assert "19.2%" in rows["large+small"] and "large-model, small-model" in rows["large+small"]
    assert "3.8%" in rows["none (no LLM)"] and "$0.00000" in rows["none (no LLM)"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--since", "yesterday"], "invalid --since"),
        (["--until", "2025-13-01"], "invalid --until"),
        (["--since", "2025-03-02", "--until", "2025-03-01"], "must be before --until"),
        (["--clickhouse-url", "http://localhost:8123"], "--clickhouse-url must look like clickhouse://"),
    ],
)
def test_bad_arguments_are_a_clear_error_and_exit_code_2(
    data_dir: Path, arguments: list[str], message: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["analytics", "report", "--data-dir", str(data_dir), "--no-png", *arguments])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_a_data_dir_without_chdb_is_refused_rather_than_reported_empty(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analytics", "report", "--data-dir", str(tmp_path / "typo"), "--no-png"])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "typo").exists()


def test_a_chdb_folder_held_by_a_running_stack_is_a_clear_error(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from chdb.session import Session; s = Session(sys.argv[1]); "
            "print('open', flush=True); time.sleep(60)",
            str(data_dir / "chdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = runner.invoke(app, ["analytics", "report", "--data-dir", str(data_dir), "--no-png", *WINDOW])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1, result.output
    assert "held open by another process" in result.output and "one process at a time" in result.output


def test_relative_and_iso_times_parse_to_utc_seconds() -> None:
    now = UNTIL.replace(microsecond=0)
    assert parse_moment("24h", now) == SINCE
    assert parse_moment("1d", now) == parse_moment("2025-03-01", now) == parse_moment("2025-03-01T01:00+01:00", now)
    assert parse_moment("now", now) == now
    with pytest.raises(ValueError, match="duration ago"):
        parse_moment("-3d", now)
