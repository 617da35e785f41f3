"""Is the loop improving? The console's view of each version's evidence (rlhf_core.loop.evidence): a Gao-style chart
(x: √KL to the base per version; y: the proxy gain as claimed and as re-scored, the reward model's fresh accuracy
on the version's own pairs and the human win rate against the base, with their 95% intervals), the
over-optimization alarm, and Rollback, which makes an older (or newer) version current through the action
service. Operator-only on the server, like every event of the console."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext, is_number
from labeling_app.render import plain_markdown
from rlhf_core.service.actor import ActionRefused
from rlhf_core.service.dashboard import rounds_table
from rlhf_core.service.versions import rollback

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 60, 20, 50
COLORS = {"claimed": "#1f3f7a", "rescored": "#4a78c2", "fresh": "#b8860b", "human": "#2e8b57"}
NO_CHART = ("The chart needs a trained version with its KL: it shows each version's proxy gain (claimed and "
            "re-scored), its reward model's fresh accuracy and the human win rate against √KL to the base.")


def _interval(row: dict[str, Any], key: str) -> tuple[float, float, float] | None:
    """(value, low, high) of a share stored with its interval: fresh accuracy or the human win rate."""
    if key == "fresh":
        fresh = row.get("fresh") or {}
        value, interval = fresh.get("accuracy"), fresh.get("interval")
    else:
        value, interval = row.get("human_win_rate"), row.get("human_win_interval")
    if not is_number(value):
        return None
    low, high = interval if interval else (value, value)
    return float(value), float(low), float(high)


def gao_chart(rounds: list[dict[str, Any]]) -> str:
    """An inline SVG of every version with a KL: proxy gains (left axis, base standard deviations) and fresh
    accuracy and human win rate (right axis, %, bars for the 95% intervals) over √KL to the base. The current
    version's label is bold; a version with an over-optimization alarm is ringed in red. "" when nothing to draw."""
    points = [r for r in rounds if is_number(r.get("sqrt_kl"))]
    if len(points) < 2:
        return ""
    gains = [g for r in points for g in (r.get("claimed_gain"), r.get("rescored_gain")) if is_number(g)] or [0.0]
    g_low, g_high = min(0.0, *gains), max(0.0, *gains)
    g_span = max(g_high - g_low, 1e-6)
    x_high = max(max(r["sqrt_kl"] for r in points), 1e-6)

    def x(value: float) -> float:
        return LEFT + value / x_high * (WIDTH - LEFT - RIGHT)

    def y_gain(value: float) -> float:
        return TOP + (g_high - value) / g_span * (HEIGHT - TOP - BOTTOM)

    def y_share(value: float) -> float:
        return TOP + (1.0 - value) * (HEIGHT - TOP - BOTTOM)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
             'aria-label="Proxy gain, fresh accuracy and human win rate against the square root of KL to the base" '
             'class="gao-chart">',
             f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#999"/>',
             f'<line x1="{LEFT}" y1="{y_share(0.5):.1f}" x2="{WIDTH - RIGHT}" y2="{y_share(0.5):.1f}" stroke="#bbb" '
             'stroke-dasharray="4 3"><title>50%: chance, or no better than the base</title></line>']
    for key, label in (("claimed_gain", "claimed"), ("rescored_gain", "rescored")):
        line = [(x(r["sqrt_kl"]), y_gain(r[key])) for r in points if is_number(r.get(key))]
        if len(line) >= 2:
            parts.append(f'<polyline class="series-{label}" fill="none" stroke="{COLORS[label]}" stroke-width="2" '
                         f'points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in line)}"/>')
        for (a, b), r in zip(line, [r for r in points if is_number(r.get(key))], strict=True):
            parts.append(f'<circle class="point-{label}" cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{COLORS[label]}">'
                         f'<title>v{r["version"]}: {label} proxy gain {r[key]:+.2f} base std</title></circle>')
    for key, label in (("fresh", "fresh"), ("human", "human")):
        for r in points:
            share = _interval(r, key)
            if share is None:
                continue
            value, low, high = share
            cx = x(r["sqrt_kl"]) + (4 if key == "human" else -4)
            what = "reward model's fresh accuracy" if key == "fresh" else "human win rate vs base"
            parts.append(f'<line class="interval-{label}" x1="{cx:.1f}" y1="{y_share(low):.1f}" x2="{cx:.1f}" '
                         f'y2="{y_share(high):.1f}" stroke="{COLORS[label]}" stroke-width="2"/>'
                         f'<rect class="point-{label}" x="{cx - 3:.1f}" y="{y_share(value) - 3:.1f}" width="6" '
                         f'height="6" fill="{COLORS[label]}"><title>v{r["version"]}: {what} {value:.0%} '
                         f'(95% {low:.0%} to {high:.0%})</title></rect>')
    for r in points:
        cx = x(r["sqrt_kl"])
        weight = ' font-weight="bold"' if r.get("current") else ""
        parts.append(f'<text class="version" x="{cx:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="11" '
                     f'text-anchor="middle" fill="currentColor"{weight}>v{r["version"]}</text>')
        if r.get("overoptimization"):
            parts.append(f'<circle class="alarm" cx="{cx:.1f}" cy="{y_gain(r.get("claimed_gain") or 0.0):.1f}" '
                         f'r="9" fill="none" stroke="#c0392b" stroke-width="2"><title>'
                         f'{html.escape(r["overoptimization"])}</title></circle>')
    parts.append(f'<text x="{(WIDTH + LEFT - RIGHT) / 2:.0f}" y="{HEIGHT - 12}" font-size="12" text-anchor="middle" '
                 f'fill="currentColor">√KL to the base (nats/token), up to {x_high:.2f}</text>'
                 f'<text x="8" y="{TOP + 8}" font-size="11" fill="currentColor">gain {g_high:+.1f}</text>'
                 f'<text x="8" y="{HEIGHT - BOTTOM}" font-size="11" fill="currentColor">{g_low:+.1f}</text>'
                 f'<text x="{WIDTH - RIGHT + 6}" y="{TOP + 8}" font-size="11" fill="currentColor">100%</text>'
                 f'<text x="{WIDTH - RIGHT + 6}" y="{HEIGHT - BOTTOM}" font-size="11" fill="currentColor">0%</text>'
                 '</svg>')
    legend = " · ".join(f'<span style="color:{c}">■</span> {name}' for name, c in (
        ("proxy gain as claimed", COLORS["claimed"]), ("as re-scored by the next reward model", COLORS["rescored"]),
        ("fresh accuracy", COLORS["fresh"]), ("human win rate vs base", COLORS["human"])))
    return "".join(parts) + f'<div class="gao-legend" style="font-size:12px">{legend}; red ring: alarm</div>'


def alarm_note(rounds: list[dict[str, Any]]) -> str | None:
    """A sentence when the current version carries an over-optimization alarm."""
    current = next((r for r in rounds if r.get("current")), None)
    if current is None or not current.get("overoptimization"):
        return None
    return (f"Over-optimization alarm on v{current['version']}: {current['overoptimization']}. Consider rolling back "
            "(below) or lowering policy.kl_budget.")


@dataclass
class RollbackPanel:
    version: gr.Dropdown
    button: gr.Button
    result: gr.Markdown


def build_rollback_panel() -> RollbackPanel:
    with gr.Row(equal_height=True, elem_id="rollback"):
        version = gr.Dropdown([], label="Make this version current (served, and trained from next)",
                              allow_custom_value=True, elem_id="rollback-version", scale=2)
        button = gr.Button("Roll back", elem_id="btn-rollback", scale=0, min_width=120)
    result = gr.Markdown(elem_id="rollback-result")
    return RollbackPanel(version=version, button=button, result=result)


def version_choices(rounds: list[dict[str, Any]], *, clear: bool = False) -> gr.Dropdown:
    """The versions one may make current, newest first; the current one is named so. The value typed or picked
    is kept unless `clear` (after a rollback): a refresh landing while the operator types must not wipe it."""
    labels = [(f"v{r['version']}" + (" (current)" if r["current"] else ""), f"v{r['version']}")
              for r in reversed(rounds)]
    return gr.Dropdown(choices=labels, value=None) if clear else gr.Dropdown(choices=labels)


def wire_rollback_panel(ctx: OperatorContext, panel: RollbackPanel, *openers: Any) -> Any:  # noqa: ANN401
    """Wire the button (through `rlhf_core.service.versions.rollback`, audited with the operator) and fill the
    version choices when one of `openers` fires; returns the button's event, for refreshes to chain to."""

    def rollback_choices(request: gr.Request) -> gr.Dropdown:
        with ctx.checked(request):
            return version_choices(rounds_table(ctx.db))

    def roll_back(target: str | None, request: gr.Request) -> tuple[str, gr.Dropdown]:
        with ctx.checked(request) as user:
            if not target:
                return "Pick a version first.", gr.skip()
            try:
                version = rollback(ctx.db, target, ctx.actor(user, request))
            except ActionRefused as exc:
                return f"**Not rolled back:** {plain_markdown(str(exc))}", gr.skip()
            return (f"**v{version.id} is current:** annotators get its pairs and the next round starts from it. "
                    "Nothing was deleted.", version_choices(rounds_table(ctx.db), clear=True))

    for opener in openers:
        opener(rollback_choices, outputs=[panel.version], **PRIVATE)
    return panel.button.click(roll_back, inputs=[panel.version], outputs=[panel.result, panel.version],
                              api_name="rollback", api_visibility=OPERATOR_API, queue=False)
