"""Screenshots of the site for the docs: seed a temporary database from examples/, serve, shoot.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Uses Debian's Chromium (/usr/bin/chromium) through Playwright, as the browser
tests do; never downloads a browser.  Writes front.png, story.png and
front-mobile.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from aggregator import Aggregator
from aggregator.models import StoryFilter
from aggregator.settings import load_settings
from web import create_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def seed(folder: Path) -> tuple[Path, int]:
    """A database with the demo feeds polled; returns its config and the seed story's id."""
    config = folder / "config.toml"
    config.write_text('[storage]\ndb_path = "agg.db"\n[feeds]\nopml = ""\n', encoding="utf-8")
    with Aggregator(load_settings(config)) as agg:
        _, problems = agg.import_opml(ROOT / "examples" / "demo.opml")
        if problems:
            raise SystemExit(f"demo feeds: {problems}")
        agg.update()
        seeds = agg.stories(StoryFilter(query='Putin Musk Starlink Taiwan "favour to China"'), limit=5)
        if not seeds:
            raise SystemExit("the seed story was not found")
        return config, seeds[0].id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config, story_id = seed(Path(tmp))
        app = create_app(config=config)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 1000}, color_scheme="light")
                    page.goto(base + "/")
                    page.screenshot(path=str(out / "front.png"))
                    page.set_viewport_size({"width": 1280, "height": 1800})
                    page.goto(f"{base}/story/{story_id}")
                    # Open the first variant's comparison so the shot shows the diff view.
                    page.locator("details.diff > summary").first.click()
                    page.screenshot(path=str(out / "story.png"))
                    mobile = browser.new_page(
                        viewport={"width": 390, "height": 844},
                        device_scale_factor=2,
                        is_mobile=True,
                        color_scheme="dark",
                    )
                    mobile.goto(base + "/")
                    mobile.screenshot(path=str(out / "front-mobile.png"))
                finally:
                    browser.close()
        finally:
            server.shutdown()
            server.server_close()
    for name in ("front.png", "story.png", "front-mobile.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
