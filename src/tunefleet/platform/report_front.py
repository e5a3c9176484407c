"""The Pareto front of a multi-objective sweep as inline SVG for the HTML report.

Two objectives: a scatter of every complete trial, the front highlighted and joined by its step
line (the edge of what the front dominates). Three or more: parallel coordinates, one axis per
objective with the better end up, one polyline per trial coloured by its front rank. Plain SVG,
no script: the page stays offline and a test finds each front member by ``data-trial`` and
``data-front``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

from tunefleet.platform.pareto import Front

__all__ = ["FRONT_CSS", "front_svg"]

_WIDTH, _HEIGHT = 760, 440
_LEFT, _RIGHT, _TOP, _BOTTOM = 90, 30, 40, 64
_PAD = 0.04
"""Share of an axis left free at each end, so that no point sits on an axis line."""
_TICKS = 5
# Rank 0 (the front) stands out; later ranks fade towards the dominated mass.
_RANK_COLOURS = ("#d62728", "#ff7f0e", "#bcbd22", "#2ca02c", "#17becf", "#1f77b4")
_INFEASIBLE = "#9e9e9e"

FRONT_CSS = """
svg.pareto{font-size:12px;background:#fff;border:1px solid #ddd}
svg.pareto .axis{stroke:#444;stroke-width:1}
svg.pareto .grid{stroke:#eee;stroke-width:1}
svg.pareto .front-line{fill:none;stroke:#d62728;stroke-width:2}
svg.pareto circle{stroke:#fff;stroke-width:1}
svg.pareto circle.infeasible{fill:none;stroke:#9e9e9e;stroke-width:1.5}
svg.pareto polyline.trial{fill:none;stroke-width:1.5;opacity:.75}
svg.pareto polyline.trial.front{stroke-width:3;opacity:1}
svg.pareto polyline.trial.infeasible{stroke-dasharray:4 3;opacity:.6}
"""

Scale = Callable[[float], float]


def front_svg(front: Front) -> tuple[str | None, str]:
    """(a note on trials left out, or None; the SVG) of a non-empty front."""
    drawn = {n: v for n, v in front.values.items() if all(math.isfinite(x) for x in v)}
    left_out = sorted(set(front.values) - set(drawn))
    note = (
        "Not drawn (a value is not finite): " + ", ".join(f"#{n}" for n in left_out) + "."
        if left_out
        else None
    )
    if len(front.objectives) == 2:
        return note, _scatter(front, drawn)
    return note, _parallel(front, drawn)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _scale(lo: float, hi: float, start: float, end: float) -> Scale:
    """Values ``lo..hi`` onto pixels ``start..end``, inset by :data:`_PAD` at both ends."""
    if hi == lo:  # one value: the middle of the axis
        return lambda v: (start + end) / 2
    inset = (end - start) * _PAD
    start, end = start + inset, end - inset
    return lambda v: start + (v - lo) / (hi - lo) * (end - start)


def _rank_attr(front: Front, number: int) -> str:
    rank = front.ranks.get(number)
    on_front = rank == 0
    return (
        f'data-trial="{number}" data-front="{str(on_front).lower()}" '
        f'data-rank="{"infeasible" if rank is None else rank}"'
    )


def _title(front: Front, number: int, values: Sequence[float]) -> str:
    parts = ", ".join(
        f"{o.metric}={_fmt(v)}" for o, v in zip(front.objectives, values, strict=True)
    )
    rank = front.ranks.get(number)
    where = "front" if rank == 0 else ("infeasible" if rank is None else f"rank {rank}")
    return f"<title>trial {number} ({where}): {_esc(parts)}</title>"


def _svg(kind: str, inner: Sequence[str]) -> str:
    return (
        f'<svg class="pareto {kind}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{_WIDTH}" height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img">\n'
        + "\n".join(inner)
        + "\n</svg>"
    )


def _scatter(front: Front, drawn: dict[int, tuple[float, ...]]) -> str:
    xs = [v[0] for v in drawn.values()]
    ys = [v[1] for v in drawn.values()]
    sx = _scale(min(xs), max(xs), _LEFT, _WIDTH - _RIGHT)
    sy = _scale(min(ys), max(ys), _HEIGHT - _BOTTOM, _TOP)
    inner = _scatter_axes(front, sx, sy, (min(xs), max(xs)), (min(ys), max(ys)))
    inner.append(_step_line(front, drawn, sx, sy))
    # Front members last, so that no dominated point hides one.
    for number in sorted(drawn, key=lambda n: (front.on_front(n), n)):
        x, y = drawn[number]
        on_front = front.on_front(number)
        if number in front.infeasible:
            style = 'class="infeasible" r="5"'
        else:
            colour = _RANK_COLOURS[0] if on_front else "#1f77b4"
            style = f'class="{"front" if on_front else "dominated"}" r="{7 if on_front else 5}" '
            style += f'fill="{colour}" fill-opacity="{1 if on_front else 0.55}"'
        inner.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" {style} {_rank_attr(front, number)}>'
            f"{_title(front, number, (x, y))}</circle>"
        )
    inner.append(
        f'<text x="{_WIDTH - _RIGHT}" y="{_TOP - 14}" text-anchor="end">'
        f'<tspan fill="{_RANK_COLOURS[0]}">&#9679; front</tspan>  '
        f'<tspan fill="#1f77b4">&#9679; dominated</tspan>  '
        f'<tspan fill="{_INFEASIBLE}">&#9675; infeasible</tspan></text>'
    )
    return _svg("scatter", inner)


def _ticks(lo: float, hi: float) -> list[float]:
    if hi == lo:
        return [lo]
    return [lo + (hi - lo) * i / (_TICKS - 1) for i in range(_TICKS)]


def _scatter_axes(
    front: Front,
    sx: Scale,
    sy: Scale,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> list[str]:
    x0, x1, y0, y1 = _LEFT, _WIDTH - _RIGHT, _HEIGHT - _BOTTOM, _TOP
    parts = [
        f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>',
        f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>',
    ]
    for value in _ticks(*x_range):
        x = sx(value)
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}"/>')
        parts.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{_fmt(value)}</text>')
    for value in _ticks(*y_range):
        y = sy(value)
        parts.append(f'<line class="grid" x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value)}</text>')
    ox, oy = front.objectives
    parts.append(
        f'<text x="{(x0 + x1) / 2}" y="{_HEIGHT - 18}" text-anchor="middle">'
        f"{_esc(ox.metric)} ({_esc(ox.direction)})</text>"
    )
    parts.append(
        f'<text transform="translate(18 {(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">'
        f"{_esc(oy.metric)} ({_esc(oy.direction)})</text>"
    )
    return parts


def _step_line(front: Front, drawn: dict[int, tuple[float, ...]], sx: Scale, sy: Scale) -> str:
    """The front's staircase: members by their first objective from best to worst, each step
    going across to the next member's first value, then to its second."""
    first = front.objectives[0]
    sign = -1.0 if first.direction == "maximize" else 1.0
    members = sorted(
        (n for n in front.members if n in drawn), key=lambda n: (sign * drawn[n][0], n)
    )
    points: list[tuple[float, float]] = []
    for number in members:
        x, y = drawn[number]
        if points:
            points.append((x, points[-1][1]))
        points.append((x, y))
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    numbers = " ".join(map(str, members))
    return (
        f'<polyline class="front-line" data-front-line="true" data-trials="{numbers}" '
        f'points="{coords}"/>'
    )


def _parallel(front: Front, drawn: dict[int, tuple[float, ...]]) -> str:
    count = len(front.objectives)
    span = (_WIDTH - _LEFT - _RIGHT) / (count - 1)
    axes_x = [_LEFT + i * span for i in range(count)]
    scales = []
    inner: list[str] = []
    for i, objective in enumerate(front.objectives):
        column = [v[i] for v in drawn.values()]
        lo, hi = min(column), max(column)
        # The better end up on every axis: a front polyline runs along the top.
        top, bottom = (hi, lo) if objective.direction == "maximize" else (lo, hi)
        scales.append(_scale(bottom, top, _HEIGHT - _BOTTOM, _TOP))
        x = axes_x[i]
        inner += [
            f'<line class="axis" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_HEIGHT - _BOTTOM}"/>',
            f'<text x="{x:.1f}" y="{_TOP - 8}" text-anchor="middle">{_fmt(top)}</text>',
            f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 16}" text-anchor="middle">'
            f"{_fmt(bottom)}</text>",
            f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 34}" text-anchor="middle">'
            f"{_esc(objective.metric)}</text>",
            f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 50}" text-anchor="middle" fill="#666">'
            f"({_esc(objective.direction)}, better up)</text>",
        ]

    def order(n: int) -> tuple[int, int]:
        rank = front.ranks.get(n)
        return (-(len(_RANK_COLOURS) if rank is None else rank), n)

    # Worst ranks first, the front last: drawn on top.
    for number in sorted(drawn, key=order):
        values = drawn[number]
        coords = " ".join(
            f"{x:.1f},{scale(v):.1f}" for x, scale, v in zip(axes_x, scales, values, strict=True)
        )
        rank = front.ranks.get(number)
        if rank is None:
            cls, colour = "trial infeasible", _INFEASIBLE
        else:
            cls = "trial front" if rank == 0 else "trial"
            colour = _RANK_COLOURS[min(rank, len(_RANK_COLOURS) - 1)]
        inner.append(
            f'<polyline class="{cls}" stroke="{colour}" points="{coords}" '
            f"{_rank_attr(front, number)}>{_title(front, number, values)}</polyline>"
        )
    inner.append(_rank_legend(front))
    return _svg("parallel", inner)


def _rank_legend(front: Front) -> str:
    deepest = max(front.ranks.values(), default=0)
    shown = min(deepest, len(_RANK_COLOURS) - 1)
    items = [
        f'<tspan fill="{_RANK_COLOURS[r]}">&#9632; '
        + ("front" if r == 0 else f"rank {r}{'+' if r == shown and deepest > shown else ''}")
        + "</tspan>"
        for r in range(shown + 1)
    ]
    if front.infeasible:
        items.append(f'<tspan fill="{_INFEASIBLE}">&#9632; infeasible</tspan>')
    return (
        f'<text x="{_WIDTH - _RIGHT}" y="{_HEIGHT - 4}" text-anchor="end">'
        + "  ".join(items)
        + "</text>"
    )
