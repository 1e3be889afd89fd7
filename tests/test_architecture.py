"""The package's dependencies point one way, and importing sft changes no global state."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SFT = Path(__file__).resolve().parents[1] / "sft"
# leaf modules: everything may import them, they import no other sft module but sft.errors
LEAVES = {"sft.errors", "sft.contracts", "sft.hub"}
# package -> sft packages it must not import (entry points and sft.inference sit above all)
FORBIDDEN = {
    "sft.utils": {"sft.models", "sft.data", "sft.runs", "sft.callbacks", "sft.inference"},
    "sft.models": {"sft.data", "sft.runs", "sft.callbacks", "sft.inference"},
    "sft.data": {"sft.models", "sft.runs", "sft.callbacks", "sft.inference"},
    "sft.runs": {"sft.models", "sft.data", "sft.callbacks", "sft.inference"},
    "sft.callbacks": {"sft.models", "sft.data", "sft.inference"},
}
ENTRY_POINTS = {"sft.train", "sft.eval", "sft.predict", "sft.export", "sft.compare"}
API = "sft.api"  # the commands from Python: runs the entry points, and nothing imports it
JOBS = "sft.jobs"  # what the entry points run: only they import it


def module_name(path: Path) -> str:
    parts = path.relative_to(SFT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sft_imports(path: Path) -> set[str]:
    """Every sft module `path` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # relative: resolve it
            base = module_name(path).rsplit(".", node.level - (path.name == "__init__.py"))[0]
            found.add(f"{base}.{node.module}" if node.module else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "sft" or m.startswith("sft.")}


MODULES = {module_name(p): p for p in sorted(SFT.rglob("*.py"))}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependencies_point_one_way(module):
    imports = sft_imports(MODULES[module])
    if module in LEAVES:
        assert imports <= {"sft.errors"}, f"{module} is a leaf but imports {imports}"
    assert API not in imports, f"{module} imports {API}"
    if module != API:
        assert not imports & ENTRY_POINTS, f"{module} imports an entry point"
    if module not in ENTRY_POINTS and not within(module, JOBS):
        assert not any(within(m, JOBS) for m in imports), f"{module} imports a job"
    for package, forbidden in FORBIDDEN.items():
        if within(module, package):
            bad = {m for m in imports if any(within(m, f) for f in forbidden)}
            assert not bad, f"{module} must not import {sorted(bad)}"


def test_importing_sft_registers_no_resolver_and_creates_nothing(tmp_path):
    """Resolvers are registered by the entry points' explicit call, not as an import side effect."""
    script = (
        "import sft.utils.config, sft.runs.directories, sft.models, sft.data\n"
        "from omegaconf import OmegaConf\n"
        "assert not OmegaConf.has_resolver('sft_root')\n"
        "sft.utils.config.register_resolvers()\n"
        "assert OmegaConf.has_resolver('sft_root')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list(tmp_path.iterdir())


def test_commands_answer_help_and_mistakes_before_torch_loads(tmp_path):
    """--help, --cfg job, a mistaken override and a checkpoint that is not there need only Hydra:
    torch and Lightning (about 10 s to import) load once a job starts, and sft-compare needs
    neither."""
    missing = tmp_path / "run" / "checkpoints" / "last.ckpt"
    script = (
        "import sys\n"
        "from sft import compare, eval, export, predict, train\n"
        "def exits_1(main, *argv):\n"
        "    sys.argv = list(argv)\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 1, exc.code\n"
        "exits_1(train.main, 'sft-train', 'trainer.detect_anomali=true')\n"
        # a real Hydra run: its run directory and callbacks, then the job's first check
        f"exits_1(eval.main, 'sft-eval', 'ckpt_path={missing}', 'hydra.run.dir={tmp_path}/eval')\n"
        "heavy = ('torch', 'lightning', 'transformers', 'torchvision', 'torchmetrics')\n"
        "print('loaded:', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # a Trainer argument conf/trainer does not list: Lightning's arguments are known all the same
    assert "did you mean 'trainer.detect_anomaly'?" in result.stderr
    assert f"error: checkpoint {missing}: no such file" in result.stderr
    assert result.stdout.strip() == "loaded: []"
