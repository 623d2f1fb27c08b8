"""The import rules of ARCHITECTURE.md, read from the source with `ast`.

A component is the first level under `marc_keras` (`marc_keras.ranking`,
`marc_keras.experiments`, `marc_keras.text_tokenizer`, ...); `export/` and
`cli/` count as `marc_keras.export` and `marc_keras.cli`, as installed. Every
`import` statement counts, at module level or inside a function; names
loaded through `importlib` strings (the lazy public names of
`marc_keras/__init__.py`) do not.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder -> the package it is installed as (pyproject.toml's package-dir).
SOURCES = {
    "marc_keras": ROOT / "marc_keras",
    "marc_keras.export": ROOT / "export",
    "marc_keras.cli": ROOT / "cli",
}
ORCHESTRATION = "marc_keras.experiments"
MAY_IMPORT_ORCHESTRATION = {"marc_keras.experiments", "marc_keras.cli"}
# What the command line may call: the orchestration layer, the config, the
# runtime export, data download/describe, the method-name check and small helpers.
CLI_MAY_IMPORT = (
    "marc_keras.experiments",
    "marc_keras.config",
    "marc_keras.export",
    "marc_keras.data",
    "marc_keras.baselines.method_registry",
    "marc_keras.utils",
    "marc_keras.gguf_checkpoint",
)
# Package __init__ files that must import nothing: the TFRS child process and
# the runtime encoder import modules below them without Keras 3 or torch.
EMPTY_INITS = ("marc_keras.utils", "marc_keras.ranking")


def _modules():
    """Every module of the package: dotted name -> source file."""
    modules = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


MODULES = _modules()


def _imports(name):
    """The modules that `name` imports, resolved to submodules where `from` names one."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{module}" if module else base
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                yield submodule if submodule in MODULES else module


def _component(module):
    parts = module.split(".")
    return ".".join(parts[:2])


def _package_imports():
    """(importing module, imported module) for every import of a marc_keras module."""
    return [
        (name, target)
        for name in MODULES
        for target in _imports(name)
        if target.split(".")[0] == "marc_keras"
    ]


def _component_graph():
    graph = {}
    for name, target in _package_imports():
        source, destination = _component(name), _component(target)
        if source != destination:
            graph.setdefault(source, set()).add(destination)
    return graph


def _find_cycle(graph):
    """One cycle of components as a list [a, b, ..., a], or `None`."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return [*path[path.index(successor) :], successor]
            if successor not in state:
                cycle = visit(successor, [*path, successor])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def test_the_graph_sees_every_folder_and_nested_imports():
    for name in (
        "marc_keras.experiments.marc_run",
        "marc_keras.export.onnx_encoder",
        "marc_keras.cli.main",
    ):
        assert name in MODULES
    graph = _component_graph()
    # cli/main.py imports only inside its commands: nested imports are read.
    assert {"marc_keras.experiments", "marc_keras.config", "marc_keras.export"} <= graph[
        "marc_keras.cli"
    ]
    assert {"marc_keras.ranking", "marc_keras.probing", "marc_keras.models"} <= graph[
        "marc_keras.experiments"
    ]
    # `from marc_keras.config import config_checks` is an import of that module.
    assert ("marc_keras.config.run_config", "marc_keras.config.config_checks") in _package_imports()


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_components():
    cycle = _find_cycle(_component_graph())
    assert cycle is None, "import cycle between components: " + " -> ".join(cycle)


def test_only_the_cli_imports_the_orchestration_layer():
    offenders = sorted(
        f"{name} imports {target}"
        for name, target in _package_imports()
        if _component(target) == ORCHESTRATION and _component(name) not in MAY_IMPORT_ORCHESTRATION
    )
    assert not offenders, offenders


def test_the_cli_calls_the_orchestration_layer_and_a_few_entry_points():
    offenders = sorted(
        f"{name} imports {target}"
        for name, target in _package_imports()
        if _component(name) == "marc_keras.cli"
        and _component(target) != "marc_keras.cli"
        and not any(
            target == allowed or target.startswith(f"{allowed}.") for allowed in CLI_MAY_IMPORT
        )
    )
    assert not offenders, offenders


def test_config_uses_the_standard_library_only():
    offenders = sorted(
        f"{name} imports {target}"
        for name in MODULES
        if _component(name) == "marc_keras.config"
        for target in _imports(name)
        if target.split(".")[0] not in sys.stdlib_module_names
        and _component(target) != "marc_keras.config"
    )
    assert not offenders, offenders


def test_light_package_inits_import_nothing():
    for name in EMPTY_INITS:
        assert list(_imports(name)) == [], f"{MODULES[name]} must import nothing"


def test_reading_a_run_config_imports_no_framework():
    code = (
        "import sys\n"
        "from marc_keras import RunConfig\n"
        "from marc_keras.config import DownstreamConfig\n"
        "RunConfig.from_dict({'training': {'epochs': 2}, 'evaluate': {'seeds': [0]}})\n"
        "print(sorted(m for m in ('keras', 'keras_hub', 'torch', 'tensorflow', 'numpy')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_seeding_goes_through_the_backend_guard():
    # keras.utils.set_random_seed imports TensorFlow whenever it is installed
    # (it seeds it too): seconds of start-up and a second framework in a torch run.
    offenders = sorted(
        str(path.relative_to(ROOT))
        for folder in (*SOURCES.values(), ROOT / "benchmarks")
        for path in folder.rglob("*.py")
        if "keras.utils.set_random_seed(" in path.read_text("utf-8")
        and path.name != "backend_guard.py"
        and "tf.keras.utils.set_random_seed(" not in path.read_text("utf-8")
    )
    assert not offenders, f"use marc_keras.utils.backend_guard.set_random_seed in {offenders}"
