"""docs/extending.md works as written: its code blocks, applied to a copy of the project, add a task."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, TINY

DOC = ROOT / "docs" / "extending.md"


def titled_blocks(markdown: str) -> dict[str, str]:
    """{'src/attnlab/tasks.py': code, ...} for every fenced block with a title="..."."""
    return {m.group(1): m.group(2) for m in re.finditer(r'```\w+ title="([^"]+)"\n(.*?)```', markdown, re.S)}


def test_add_a_task_by_following_the_doc(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for part in ("src", "conf", "scripts"):
        shutil.copytree(ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    blocks = titled_blocks(DOC.read_text())
    assert set(blocks) == {"src/attnlab/tasks.py", "conf/data/shift.yaml"}
    for rel, code in blocks.items():  # step 1 appends to a source file, step 2 creates a config file
        target = project / rel
        target.write_text((target.read_text() + "\n\n" if target.exists() else "") + code)
    command = re.search(r"```bash\n(python scripts/train.py data=shift)\n```", DOC.read_text()).group(1)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, *command.split()[1:], *TINY, f"hydra.run.dir={run_dir}"],
        cwd=project,
        env={"PYTHONPATH": str(project / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = (run_dir / "metrics.json").read_text()
    assert '"task": "shift"' in metrics and '"seq_len": 8' in metrics
    # the registry, hence the schema, now lists it: a typo names it among the valid ones
    typo = subprocess.run(
        [sys.executable, "scripts/train.py", "data.task=shfit"],
        cwd=project,
        env={"PYTHONPATH": str(project / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert typo.returncode == 1 and "shift" in typo.stderr
