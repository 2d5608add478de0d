"""Server-rendered SVG line charts (no JavaScript, nothing inline that a strict CSP would block)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"]
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 220, 40, 12, 12, 28


def line_chart(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]]) -> Markup:
    """A 0..1 line chart; None values leave gaps. Labels are x tick texts (first, middle, last are shown)."""
    n = max(len(labels), 1)
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(i: int) -> float:
        return PAD_L + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return PAD_T + plot_h * (1 - max(0.0, min(1.0, v)))

    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H + 18 * len(series)}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="#e5e7eb"/><text x="{PAD_L - 4}" y="{y(tick) + 4:.1f}" font-size="10" '
            f'text-anchor="end" fill="#6b7280">{int(tick * 100)}%</text>'
        )
    for i in sorted({0, (n - 1) // 2, n - 1}):
        if i < len(labels):
            # The end labels hug the plot's edges so they are never clipped by the viewBox.
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            parts.append(
                f'<text x="{x(i):.1f}" y="{H - 8}" font-size="10" text-anchor="{anchor}" '
                f'fill="#6b7280">{escape(labels[i])}</text>'
            )
    for k, (name, values) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        segment: list[str] = []
        for i, v in enumerate(values):
            if v is None:
                parts.append(_polyline(segment, color))
                segment = []
                continue
            segment.append(f"{x(i):.1f},{y(v):.1f}")
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}">'
                f"<title>{escape(name)} {escape(labels[i] if i < len(labels) else '')}: "
                f"{v:.0%}</title></circle>"
            )
        parts.append(_polyline(segment, color))
        ly = H + 12 + 18 * k
        parts.append(
            f'<rect x="{PAD_L}" y="{ly - 9}" width="12" height="12" fill="{color}"/>'
            f'<text x="{PAD_L + 18}" y="{ly + 1}" font-size="12">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above is escaped


def _polyline(points: list[str], color: str) -> str:
    if len(points) < 2:
        return ""
    return f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" stroke-width="2"/>'
