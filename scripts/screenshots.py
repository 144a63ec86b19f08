"""Take PNG screenshots of TensorBoard's tabs with headless Chromium.

    python scripts/screenshots.py LOGDIR OUTDIR [--width 1400 --height 1000] [--runs REGEX]
    make screenshots    # the limitations study's halfswap runs of seed 0, into docs/

Writes tensorboard_{scalars,images,hparams,custom_scalars}.png into OUTDIR. Needs ``chromium`` (Debian: ``apt-get
install chromium``). Exits 1 if any screenshot is missing or empty.
"""

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from attnlab.tbserver import get_json, tensorboard

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# URL hashes and file names: the classic dashboards ('#timeseries' mixes card types under a settings pane).
TABS = ("scalars", "images", "hparams", "custom_scalars")
SHOT_TIMEOUT_S = 90
# --virtual-time-budget: the app fetches and draws before the capture (else an empty page under the toolbar).
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=15000")


def screenshot(browser: str, url: str, out: Path, size: tuple[int, int]) -> bool:
    """Capture url into out; False if no PNG was written."""
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="tb-shot-") as profile:
        window = f"--window-size={size[0]},{size[1]}"
        cmd = [browser, *CHROMIUM_FLAGS, window, f"--user-data-dir={profile}", f"--screenshot={out}", url]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=SHOT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"FAILED {out}: chromium timed out after {SHOT_TIMEOUT_S} s", file=sys.stderr)
            return False
    if res.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-5:])
        print(f"FAILED {out} (chromium exit {res.returncode})\n{tail}", file=sys.stderr)
        return False
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logdir", type=Path, help="TensorBoard log directory (e.g. a sweep dir)")
    ap.add_argument("outdir", type=Path, help="where to write the PNGs")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--runs", help="regex: the runs to show (TensorBoard selects none past 40 runs); default: all")
    args = ap.parse_args()
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        sys.exit(
            f"error: no Chromium found (looked for {', '.join(BROWSERS)}); install it with: apt-get install chromium"
        )
    if not args.logdir.is_dir():
        sys.exit(f"error: log directory {args.logdir} does not exist")
    args.outdir.mkdir(parents=True, exist_ok=True)
    with tensorboard(args.logdir) as base:
        runs = get_json(f"{base}/data/runs")
        if not runs:
            sys.exit(f"error: no TensorBoard run in {args.logdir}")
        shown = {r: args.runs is None or re.search(args.runs, r) is not None for r in runs}
        if not any(shown.values()):
            sys.exit(f"error: --runs {args.runs!r} matches none of the {len(runs)} runs")
        selection = urllib.parse.quote(base64.b64encode(json.dumps(shown).encode()).decode())
        ok = []
        for tab in TABS:
            url = f"{base}/?darkMode=false#{tab}&runSelectionState={selection}"
            ok.append(screenshot(browser, url, args.outdir / f"tensorboard_{tab}.png", (args.width, args.height)))
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
