"""The package's shape: imports run one way with no circles, config.py imports no library module,
the README's layout lists every module, and every console script is a working command."""
import ast
import configparser
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vov3d_tf"


def _modules():
    """{dotted module name: path} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path, *, module_level_only=False):
    """The vov3d_tf modules `path` imports (at any depth, or at module level only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vov3d_tf"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vov3d_tf"))
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _cycles(graph):
    cycles, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_circles():
    """No module imports (at module level or inside a function) one that imports it back."""
    assert _cycles(GRAPH) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the check


# Layers: the foundation (0-1) <- model, data (2) <- adapters (3) <- train (4) <- deploy, search (5).
LAYER = {"_compat": 0, "fileio": 0, "runtime": 1, "config": 1, "model": 2, "data": 2,
         "adapters": 3, "train": 4, "deploy": 5, "search": 5}
# config.py asks the model for its own rules (names, widths) and the synthetic writer for its
# keyword arguments when it checks a config: rules delegated to their owner, inside a function.
ALLOWED_UPWARD = {("vov3d_tf.config", "vov3d_tf.model.networks"),
                  ("vov3d_tf.config", "vov3d_tf.data.build.synthetic")}


def _folder(module):
    """The top-level module or folder of `module` ("" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module):
    return LAYER.get(_folder(module), 6)  # the package face sits above all


def test_imports_run_one_way():
    upward = sorted((u, v) for u, deps in GRAPH.items() for v in deps
                    if _layer(v) > _layer(u) and (u, v) not in ALLOWED_UPWARD)
    assert upward == []
    # model and data are siblings: neither imports the other.
    sideways = sorted((u, v) for u, deps in GRAPH.items() for v in deps
                      if {_folder(u), _folder(v)} == {"model", "data"})
    assert sideways == []


def test_config_imports_no_library_module_at_module_level():
    assert _imports(MODULES["vov3d_tf.config"], module_level_only=True) == set()


def test_readme_layout_lists_every_module():
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("## Models")]
    block = layout[layout.index("```"):layout.rindex("```")]
    listed, folders = set(), []
    for line in block.splitlines()[1:]:
        match = re.match(r"^( *)(\S+)", line)
        if not match:
            continue
        depth, entry = len(match.group(1)) // 2, match.group(2)
        folders[depth:] = []
        if entry.endswith("/"):
            folders.append(entry.rstrip("/"))
        elif entry.endswith(".py"):
            listed.add("/".join(folders + [entry]))
    files = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
             if p.name != "__init__.py"}
    assert files - listed == set(), "modules missing from the README's layout"
    assert {f for f in listed if f.startswith("vov3d_tf/")} - files == set(), "stale entries"


def _console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


SCRIPTS = _console_scripts()


def test_every_command_is_a_console_script():
    assert sorted(SCRIPTS) == sorted([
        "vov3d-train", "vov3d-export", "vov3d-build-shards", "vov3d-validate", "vov3d-predict",
        "vov3d-lite", "vov3d-convert", "vov3d-flops", "vov3d-bench", "vov3d-search",
        "vov3d-submission", "vov3d-serving-bench", "vov3d-data-bench", "vov3d-synthetic"])
    # every module with a `main` is a command
    with_main = {name for name, path in MODULES.items()
                 if re.search(r"^def main\(", path.read_text(), re.M)}
    assert with_main == {target.split(":")[0] for target in SCRIPTS.values()}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_help_names_the_command(script, capsys):
    module, func = SCRIPTS[script].split(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {script} ")
