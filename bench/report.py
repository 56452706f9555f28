"""The rows of the results table and the raw figures behind them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One line of the results table."""

    measure: str
    baseline: str
    resolver: str
    figure: str
    target: str
    ok: bool | None  # None: reported, no target


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, dict] = field(default_factory=dict)
    ttfb: dict[str, list[list[float]]] = field(default_factory=dict)  # per repetition, for the plot

    def add(self, measure: str, baseline: str, resolver: str, figure: str, target: str, ok: bool | None) -> None:
        self.rows.append(Row(measure, baseline, resolver, figure, target, ok))
