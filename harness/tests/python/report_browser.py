"""Loads a sluice-bench HTML report (run or compare) in headless Chromium
(Debian's package, driven by Playwright) and checks its interactive charts.

Fails (exit 1) on a console error, an uncaught exception, a request for
anything but the file itself, or a chart that does not behave: for up to
12 series of every chart, every other series is hidden by clicking its
legend entry (its SVG group must then be hidden), the mouse is put on a
point of the remaining series and the hover box must show that series'
name and the point's exact texts; with that series hidden too, hovering
there shows nothing. Prints JSON: each figure's id and series names.
"""

import json
import math
import pathlib
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
SERIES_CHECKED_MAX = 12


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def distinct_point(points):
    """The point farthest from its series' other points, so the nearest
    point under the mouse is it even with the pointer rounded to a pixel."""
    best, best_d = None, -1.0
    for i, p in enumerate(points):
        d = min(
            (math.hypot(p[0] - q[0], p[1] - q[1]) for j, q in enumerate(points) if j != i),
            default=math.inf,
        )
        if d > best_d:
            best, best_d = p, d
    if best_d < 2.0:
        fail(f"no point stands 2 px apart from the others: {points[:5]}...")
    return best


def click_legend(fig, i):
    fig.locator(f'ul.legend li[data-i="{i}"]').click()


def group_hidden(fig, i):
    return fig.locator(f'g.series[data-i="{i}"]').evaluate(
        "g => getComputedStyle(g).display === 'none'"
    )


def hover(page, fig, point):
    fig.locator(".plot-body > svg").scroll_into_view_if_needed()
    box = fig.locator(".plot-body > svg").evaluate(
        "s => { const r = s.getBoundingClientRect();"
        " return [r.left, r.top, r.width / s.viewBox.baseVal.width]; }"
    )
    x = box[0] + point[0] * box[2]
    y = box[1] + point[1] * box[2]
    # Leave and re-enter so every check starts from a fresh mousemove.
    page.mouse.move(1, 1)
    page.mouse.move(x, y, steps=2)
    tip = fig.locator(".tip")
    return tip.text_content() if tip.is_visible() else None


def check_figure(page, fig):
    fig.scroll_into_view_if_needed()
    data = json.loads(fig.locator("script.plot-data").text_content())
    series = data["series"]
    n = len(series)
    if n == 0:
        fail(f"figure {fig.get_attribute('id')} has no series")
    for k in range(min(n, SERIES_CHECKED_MAX)):
        if not series[k]["points"]:
            fail(f"series {series[k]['name']} has no points")
        for i in range(n):
            if i != k:
                click_legend(fig, i)
                if not group_hidden(fig, i):
                    fail(f"series {i} still shown after its legend entry was clicked")
        point = distinct_point(series[k]["points"])
        want = f"{series[k]['name']}: {point[2]}, {point[3]}"
        got = hover(page, fig, point)
        if got != want:
            fail(f"hover over {point[:2]}: wanted `{want}`, got `{got}`")
        click_legend(fig, k)
        if hover(page, fig, point) is not None:
            fail(f"hover shows a hidden series over {point[:2]}")
        for i in range(n):
            click_legend(fig, i)
            if group_hidden(fig, i):
                fail(f"series {i} still hidden after a second click")
    return {"id": fig.get_attribute("id"), "series": [s["name"] for s in series]}


def main(path):
    url = pathlib.Path(path).resolve().as_uri()
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "request",
            lambda r: r.url != url and problems.append(f"request: {r.url}"),
        )
        page.goto(url)
        page.wait_for_load_state("load")
        figures = [check_figure(page, f) for f in page.locator("figure.plot").all()]
        browser.close()
    if problems:
        fail("\n".join(problems))
    if not figures:
        fail("no charts on the page")
    print(json.dumps({"figures": figures}))


if __name__ == "__main__":
    main(sys.argv[1])
