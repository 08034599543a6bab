"""Every DVC stage depends on every project module its script imports, directly or through other modules, so a
changed module can never leave a stale result that `dvc status` calls up to date."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "bdirnet"


def module_file(name: str) -> Path | None:
    """The file of a project module (``bdirnet.x``, ``bdirnet``, or a stage helper in pipelines/), else None."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        base = REPO.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None
    helper = REPO / "pipelines" / f"{name}.py"
    return helper if len(parts) == 1 and helper.is_file() else None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import anywhere in ``path`` (function-level imports too), with the parent
    packages that importing it runs (``bdirnet`` for ``bdirnet.x``) and ``from pkg import mod`` submodules."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    with_parents = set(names)
    for name in names:
        parts = name.split(".")
        with_parents |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return with_parents


def project_closure(script: Path) -> set[Path]:
    """The script and every project file it imports, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [f for name in imported_modules(path) if (f := module_file(name)) is not None]
    return seen


def stage_scripts(dvc_yaml: Path) -> dict[str, tuple[Path, list[str]]]:
    """stage name -> (its script, its deps as written)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        words = str(stage["cmd"]).split()
        script = next(w for w in words if w.startswith("pipelines/") and w.endswith(".py"))
        out[name] = (REPO / script, [str(d) for d in stage.get("deps", [])])
    return out


def missing_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}
    for name, (script, deps) in stage_scripts(dvc_yaml).items():
        covered = [REPO / d.rstrip("/") for d in deps]
        for path in sorted(project_closure(script)):
            if not any(path == c or c in path.parents for c in covered):
                missing.setdefault(name, []).append(path.relative_to(REPO).as_posix())
    return missing


def test_every_stage_depends_on_every_project_module_it_imports() -> None:
    missing = missing_deps(REPO / "dvc.yaml")
    assert not missing, "dvc.yaml deps lack modules the stage scripts import:\n" + "\n".join(
        f"  {stage}: {', '.join(paths)}" for stage, paths in missing.items()
    )


def test_the_walk_follows_imports_through_modules(tmp_path: Path) -> None:
    """The walk itself: train.py reaches config.py only through other modules, and a function-level import counts."""
    closure = {p.relative_to(REPO).as_posix() for p in project_closure(REPO / "pipelines/train.py")}
    assert {"pipelines/_common.py", "bdirnet/__init__.py", "bdirnet/training.py", "bdirnet/model.py"} <= closure
    assert "bdirnet/config.py" in closure and "bdirnet/metrics.py" in closure
    stale = tmp_path / "dvc.yaml"
    stale.write_text(
        yaml.safe_dump({"stages": {"s": {"cmd": "python pipelines/register.py", "deps": ["pipelines/register.py"]}}})
    )
    assert "bdirnet/weights.py" in missing_deps(stale)["s"]
