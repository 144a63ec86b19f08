"""Draw what a trained run attends to: one validation sequence per class and its attention weights.

python scripts/plot_attention.py outputs/runs/<run> docs/attention_halfswap.png [--ckpt best] [--layer 0] [--head 0]
"""

import argparse
import atexit
import gc
import sys
from pathlib import Path

from attnlab.errors import ArgumentParser, ConfigError, outlive_readers, stop_on_signals

stop_on_signals("the figure is whole, the old or the new; run it again to draw it")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from attnlab import run_folder  # noqa: E402
from attnlab.config import DataConfig, ModelConfig, check_data_memory, check_section, run_config  # noqa: E402
from attnlab.data import SyntheticDataModule  # noqa: E402
from attnlab.diagnostics import CLASS_NAMES, attention_figure, checkpoint_title, describe  # noqa: E402
from attnlab.module import load_module  # noqa: E402

atexit.register(gc.freeze)  # a quicker exit: scripts/train.py says why
outlive_readers()  # `| true`: the figure is written either way


parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("run_dir", type=Path, help="a run folder, as train.py printed it")
parser.add_argument("out", type=Path, help="the figure to write: .png, .svg, .pdf or another format matplotlib writes")
parser.add_argument("--ckpt", default="best", help="best (the tested checkpoint), last, or a .ckpt file's path")
parser.add_argument("--layer", type=int, default=0, help="the layer, from 0")
parser.add_argument("--head", type=int, default=0, help="the head, from 0")
args = parser.parse_args()
try:
    formats = FigureCanvasAgg.get_supported_filetypes()
    if args.out.is_dir() or args.out.suffix[1:].lower() not in formats:
        raise ConfigError("out", str(args.out), f"give a file name ending in one of .{', .'.join(formats)}")
    run_folder.check_no_links_out(args.run_dir, "run_dir")  # every file it reads stays inside the run
    cfg = run_config(args.run_dir)
    data_cfg = cfg["data"]  # generated and built below: checked as a run's are (crafted: n_train -1, 10^10 sequences)
    try:
        check_section(data_cfg, DataConfig, "data.")
        check_section(cfg["model"], ModelConfig, "model.")
        check_data_memory(data_cfg, cfg["model"])
    except ConfigError as e:
        raise ConfigError("run_dir", str(args.run_dir), f"its saved config's {e}") from e
    module = load_module(run_folder.checkpoint_path(args.run_dir, args.ckpt, "--ckpt"), cfg, "--ckpt")
    for name, value, count, what in (
        ("--layer", args.layer, cfg["model"]["num_layers"], "layers"),
        ("--head", args.head, cfg["model"]["num_heads"], "heads per layer"),
    ):
        if not 0 <= value < count:
            raise ConfigError(name, value, f"the model has {count} {what}: give 0..{count - 1}")
    data = SyntheticDataModule(**data_cfg, train_seed=cfg["seed"])
    data.setup()
    x, y = data.splits["val"]
    picks = [int((y == label).nonzero()[0]) for label in range(len(CLASS_NAMES))]  # the first of each class
    state = run_folder.status(args.run_dir)[0]  # best.ckpt is the tested model only once the run has finished
    unfinished = f"best.ckpt (lowest val/loss so far; the run is {state}, untested)"
    name = args.ckpt if args.ckpt != "best" else "tested (best.ckpt)" if state == "ok" else unfinished
    title = checkpoint_title(describe(cfg), module.loaded_from, name)  # loaded_from: read with the weights
    fig = attention_figure(module.net, x[picks], args.layer, args.head, title)
except ConfigError as e:
    sys.exit(f"error: {e}")
try:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with run_folder.replacing(args.out) as tmp:  # whole or the old one, however it is stopped
        fig.savefig(tmp, dpi=110, format=args.out.suffix[1:].lower())
except OSError as e:  # a read-only folder, a file where a folder should be
    sys.exit(f"error: out={str(args.out)!r} cannot be written ({e.strerror or e})")
print(f"wrote {args.out}")
