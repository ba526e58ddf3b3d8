"""Scenario validation: run labelled prompts on chosen backends and write a report people read.

::

    from pixelroute import Client
    from pixelroute.scenarios import builtin_suite, run_scenarios, write_report

    with Client.from_config("pixelroute.toml") as client:
        result = run_scenarios(client, builtin_suite(), backends=["sd35-turbo", "ideogram-v2a"], seeds=2)
    html, data = write_report(result, "scenario-report")

The command line is ``pixelroute scenarios run``.
"""

from .report import render_html, report_data, write_report
from .runner import Progress, Reviewer, RunResult, Sample, backend_metrics, run_scenarios
from .scorers import ClipScorer, OcrScorer, Review, Score, Scorer, default_scorers, parse_review
from .suite import Scenario, ScenarioPrompt, Suite, builtin_suite, load_suite
from .summary import scenario_metrics, winners

__all__ = [
    "ClipScorer",
    "OcrScorer",
    "Progress",
    "Review",
    "Reviewer",
    "RunResult",
    "Sample",
    "Scenario",
    "ScenarioPrompt",
    "Score",
    "Scorer",
    "Suite",
    "backend_metrics",
    "builtin_suite",
    "default_scorers",
    "load_suite",
    "parse_review",
    "render_html",
    "report_data",
    "run_scenarios",
    "scenario_metrics",
    "winners",
    "write_report",
]
