"""The docs stay true to the code: generated pages are current, and everything public is documented."""
import ast
import importlib
import importlib.util
import inspect
import pathlib
import pkgutil
import re

import numpy as np
import pytest

import minidae

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shapes_page_tool():
    spec = importlib.util.spec_from_file_location("shapes_page", ROOT / "docs" / "tools" / "shapes_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shapes_page_matches_minidae_summary():
    """docs/shapes.md's tables are what docs/tools/shapes_page.py makes of ``minidae.models.summary`` now."""
    tool = _shapes_page_tool()
    _, on_page, _ = tool.page_parts((ROOT / "docs" / "shapes.md").read_text())
    assert on_page == tool.generated(), ("docs/shapes.md is stale (a model or the summary changed): run "
                                         "python docs/tools/shapes_page.py --write")


def _has_docstring(obj):
    doc = getattr(getattr(obj, "__func__", obj), "__doc__", None)  # classmethod/staticmethod: the function's
    return bool(doc and doc.strip())


def _method_documented(cls, name):
    """A method counts as documented when it or the method it overrides (in a base class) has a docstring."""
    return any(name in vars(base) and _has_docstring(vars(base)[name]) for base in cls.__mro__)


def _undocumented_in_source(path, module_name):
    """The same check from the source text, for a module that cannot be imported here (minidae.speed.cuda without CuPy)."""
    tree = ast.parse(path.read_text())
    missing = [] if ast.get_docstring(tree) else [module_name]
    public = next((node.value for node in tree.body if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], "id", None) == "__all__"), None)
    names = [element.value for element in public.elts] if public is not None else []
    definitions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for name in names:
        node = definitions.get(name)
        if node is None:
            continue  # a constant
        if not ast.get_docstring(node):
            missing.append(f"{module_name}.{name}")
        if isinstance(node, ast.ClassDef):
            missing += [f"{module_name}.{name}.{item.name}" for item in node.body
                        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                        and not ast.get_docstring(item)]
    return missing


def undocumented():
    """Every module of minidae, every class and function in its ``__all__``, and every public method or
    property of those classes (its own or inherited from a minidae class) that has no docstring."""
    names = ["minidae"] + [info.name for info in pkgutil.walk_packages(minidae.__path__, "minidae.")
                           if not info.name.endswith("__main__")]  # importing __main__ would run the CLI
    missing = []
    for module_name in names:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # minidae.speed.cuda needs CuPy: check its source instead
            path = ROOT / (module_name.replace(".", "/") + ".py")
            missing += _undocumented_in_source(path, module_name)
            continue
        if not _has_docstring(module):
            missing.append(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue  # submodules are checked as modules; constants need no docstring
            if not _has_docstring(obj):  # a class without one has __doc__ None (it is not inherited)
                missing.append(f"{module_name}.{name}")
            if not inspect.isclass(obj):
                continue
            for attribute in dir(obj):
                if attribute.startswith("_"):
                    continue
                owner = next(base for base in obj.__mro__ if attribute in vars(base))
                value = vars(owner)[attribute]
                if not owner.__module__.startswith("minidae") or not (
                        callable(value) or isinstance(value, (property, classmethod, staticmethod))):
                    continue  # inherited from Python (Exception.args) or a plain class attribute
                if not _method_documented(obj, attribute):
                    missing.append(f"{owner.__module__}.{owner.__qualname__}.{attribute}")
    return sorted(set(missing))


def test_every_public_class_function_and_method_has_a_docstring():
    missing = undocumented()
    assert not missing, f"{len(missing)} public names without a docstring: {', '.join(missing)}"


# -------------------------------------------------------------------------------------------------
# docs/backprop.md: the worked example is the code's, its links and quoted code are current, its
# examples run, and its inline math avoids what GitHub's Markdown would eat before MathJax sees it.

BACKPROP = ROOT / "docs" / "backprop.md"


def _worked_example_tool():
    spec = importlib.util.spec_from_file_location("worked_example", ROOT / "docs" / "tools" / "worked_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose_lines(text):
    """(line number, line) of the page outside fenced code and math blocks."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            yield number, line


def _python_blocks(text):
    return re.findall(r"```python\n(.*?)\n```", text, re.S)


def test_backprop_worked_example_is_current():
    """The numbers between the worked-example markers are what docs/tools/worked_example.py prints now."""
    tool = _worked_example_tool()
    _, on_page, _ = tool.page_parts(BACKPROP.read_text())
    assert on_page == tool.generated(), ("docs/backprop.md's worked example is stale (Conv2d or im2col changed): "
                                         "run python docs/tools/worked_example.py --write")


def test_backprop_worked_example_matches_the_naive_reference():
    """Every number of the worked example, recomputed by the loops of minidae/nn/reference.py and by hand."""
    from minidae.nn import reference
    e = _worked_example_tool().compute()
    x, w, b, dy = e["x"], e["W"], e["b"], e["dy"]
    assert np.array_equal(e["y"], reference.conv2d_forward(x, w, b))
    dx, dw, db = reference.conv2d_backward(dy, x, w)
    assert np.array_equal(e["dx"], dx) and np.array_equal(e["dW"], dw) and np.array_equal(e["db"], db)
    windows = [x[0, 0, i:i + 2, j:j + 2].ravel() for i in range(2) for j in range(2)]  # columns (i, j) of X
    assert np.array_equal(e["X"], np.stack(windows, axis=1))
    assert np.array_equal(e["Y"].ravel(), [w.ravel() @ window + b[0] for window in windows])
    assert np.array_equal(e["dX"], np.outer(w.ravel(), dy.ravel()))  # column (i, j): the kernel times dy[i, j]
    assert np.array_equal(e["dW2"].ravel(), sum(d * window for d, window in zip(dy.ravel(), windows)))
    assert all(float(v).is_integer() for v in np.concatenate([a.ravel() for a in e.values()])), \
        "the example should stay in small integers, to be readable"


def test_backprop_links_name_functions_that_exist():
    """Every [`name`](../minidae/...py) link points at a file that defines that class, function or method."""
    links = re.findall(r"\[`([\w.]+)`\]\(\.\./(minidae/[\w/]+\.py)\)", BACKPROP.read_text())
    assert len(links) > 30
    for name, path in links:
        tree = ast.parse((ROOT / path).read_text())
        defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        owner, _, member = name.partition(".")
        assert owner in defined, f"docs/backprop.md links {name} to {path}, which defines no {owner}"
        if member:
            methods = {item.name for item in defined[owner].body if isinstance(item, ast.FunctionDef)}
            assert member in methods, f"docs/backprop.md links {name} to {path}, where {owner} has no {member}"


def _contains_run(lines, run):
    """Whether ``run`` occurs in ``lines`` as consecutive lines (compared without their indentation)."""
    return any(lines[start:start + len(run)] == run for start in range(len(lines) - len(run) + 1))


def test_backprop_quoted_code_is_still_in_the_source():
    """A python block whose first line is ``# minidae/...py`` quotes that file: each run of lines between
    ``...`` (lines left out) is in it, consecutively."""
    quoted = [block for block in _python_blocks(BACKPROP.read_text()) if block.startswith("# minidae/")]
    assert len(quoted) >= 8
    for block in quoted:
        path, *lines = block.splitlines()
        source = [line.strip() for line in (ROOT / path[2:]).read_text().splitlines()]
        runs = "\n".join(line.strip() for line in lines).split("\n...\n")
        stale = [run for run in runs if not _contains_run(source, run.split("\n"))]
        assert not stale, f"docs/backprop.md quotes {path[2:]}, which no longer has: {stale}"


def test_backprop_examples_run(capsys):
    """The complete examples (blocks that start with an import) run, and their asserts hold."""
    examples = [block for block in _python_blocks(BACKPROP.read_text()) if block.startswith(("import", "from"))]
    assert len(examples) >= 2
    for block in examples:
        exec(compile(block, "docs/backprop.md", "exec"), {})
    assert "no forward is waiting for its backward" in capsys.readouterr().out


def test_backprop_inline_math_survives_github_markdown():
    """Inline $...$ math on one line, without what Markdown processes before MathJax: a backslash before
    punctuation (\\, \\{ \\\\ are escapes), an underscore after punctuation (emphasis), * < > (emphasis, HTML),
    and | inside a table row. Display math goes in ```math blocks, which Markdown leaves alone."""
    problems = []
    for number, line in _prose_lines(BACKPROP.read_text()):
        code_free = re.sub(r"`[^`]*`", "", line)
        if code_free.count("$") % 2:
            problems.append(f"line {number}: an odd number of $ (inline math must not span lines)")
            continue
        for math in re.findall(r"\$([^$]+)\$", code_free):
            if re.search(r"\\[!-/:-@\[-`{-~]", math) or re.search(r"[^\w\s\\]_", math) or re.search(r"[*<>]", math) \
                    or (line.startswith("|") and "|" in math):
                problems.append(f"line {number}: ${math}$")
    assert not problems, "inline math GitHub would mangle:\n" + "\n".join(problems)


def test_backprop_section_links_lead_to_headings():
    """Every [...](#anchor) on the page names one of its headings (GitHub's anchors: lower case, punctuation
    dropped, spaces as hyphens)."""
    text = BACKPROP.read_text()
    anchors = {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for _, line in _prose_lines(text) if line.startswith("#")}
    targets = re.findall(r"\]\(#([^)]+)\)", text)
    assert targets and not set(targets) - anchors, f"links to missing sections: {sorted(set(targets) - anchors)}"


# -------------------------------------------------------------------------------------------------
# The other pages: their inline math survives GitHub's Markdown, and every link between pages lands.

def test_inline_math_of_shapes_optim_and_architecture_survives_github_markdown():
    """The rule of test_backprop_inline_math_survives_github_markdown, for the other pages with math."""
    problems = []
    for page in ("shapes.md", "optim.md", "architecture.md"):
        for number, line in _prose_lines((ROOT / "docs" / page).read_text()):
            code_free = re.sub(r"`[^`]*`", "", line)
            if code_free.count("$") % 2:
                problems.append(f"{page} line {number}: an odd number of $ (inline math must not span lines)")
                continue
            for math in re.findall(r"\$([^$]+)\$", code_free):
                if re.search(r"\\[!-/:-@\[-`{-~]", math) or re.search(r"[^\w\s\\]_", math) \
                        or re.search(r"[*<>]", math) or (line.startswith("|") and "|" in math):
                    problems.append(f"{page} line {number}: ${math}$")
    assert not problems, "inline math GitHub would mangle:\n" + "\n".join(problems)


def _anchors(markdown):
    """GitHub's anchors for the headings of a page: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for _, line in _prose_lines(markdown) if line.startswith("#")}


def test_links_between_the_docs_and_the_readme_land():
    """Every relative link in README.md and docs/*.md names a file that exists, and a heading of it when it
    has a #section."""
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    broken, checked = [], 0
    for page in pages:
        prose = "\n".join(line for _, line in _prose_lines(page.read_text()))
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"``.*?``|`[^`]*`", "", prose)):  # not in code
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            checked += 1
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert checked > 50 and not broken, f"broken links: {broken}"


def test_architecture_example_layer_passes_gradcheck_and_matches_torch():
    """The PReLU that opens docs/architecture.md's "How to add a layer" runs as the page gives it (its own
    gradcheck and PyTorch comparison included), within the section's first 60 lines, and passes the project's
    own checks too (both channel counts, float32 and float64 parity)."""
    torch = pytest.importorskip("torch", reason="the example compares with PyTorch")
    from minidae import backend, gradcheck
    page = (ROOT / "docs" / "architecture.md").read_text()
    block = next(b for b in _python_blocks(page) if "class PReLU" in b)
    section = page.split("## How to add a layer", 1)[1]
    assert section.index("assert gradcheck(PReLU") < len("\n".join(section.splitlines()[:60]))
    backend.use("numpy", seed_value=0)
    namespace = {}
    exec(compile(block, "docs/architecture.md", "exec"), namespace)
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    x = np.sign(x) * (0.05 + np.abs(x))  # away from the kink at 0
    for channels in (1, 3):
        result = gradcheck(namespace["PReLU"](channels), x)
        assert result, str(result)
    from parity import assert_torch_parity
    for dtype in (np.float64, np.float32):
        assert_torch_parity(namespace["PReLU"](3), torch.nn.PReLU(3), x, dtype, label="PReLU (architecture.md)")


def test_optim_page_quotes_adams_statements_as_they_are():
    """The statements docs/optim.md's table quotes are lines of ``minidae.optim.adam``, in the table's order."""
    from minidae import optim
    page = (ROOT / "docs" / "optim.md").read_text()
    table = page.split("| statements in `optim.adam` |", 1)[1].split("\n\n", 1)[0]
    quoted = [code for row in table.splitlines()[2:] for code in re.findall(r"`([^`]+)`", row.split(" | ")[0])]
    source = [line.strip() for line in inspect.getsource(optim.adam).splitlines()]
    assert len(quoted) == 8, quoted
    positions = [source.index(code) if code in source else None for code in quoted]
    assert None not in positions, (f"not in optim.adam ({inspect.getsourcefile(optim.adam)}): "
                                   f"{[c for c, p in zip(quoted, positions) if p is None]}")
    assert positions == sorted(positions), "docs/optim.md lists Adam's statements in another order than the code"


# -------------------------------------------------------------------------------------------------
# The remaining code blocks of the pages run too (usage.md's run in tests/test_readme.py; PyTorch's own
# code in optim.md is not minidae's and is left out).

def _blocks_of(page):
    return _python_blocks((ROOT / "docs" / page).read_text())


def test_backprop_training_step_fragment_runs():
    """backprop.md's two-line training step (the one block that is neither an import-led example nor a quote)."""
    from minidae import models, nn
    fragments = [b for b in _blocks_of("backprop.md") if not b.startswith(("import", "from", "# minidae/"))]
    assert len(fragments) == 1
    net, loss_fn = models.conv_dae(), nn.MSELoss()
    clean = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    namespace = {"net": net, "loss_fn": loss_fn, "clean": clean, "noisy": clean * 0.9}
    exec(compile(fragments[0], "docs/backprop.md", "exec"), namespace)
    assert namespace["loss"].shape == () and net.conv1.weight.grad.any()


def test_optim_page_constructors_and_step_run():
    """optim.md's first block: the three constructors as written, then one zero_grad / backward / step."""
    from minidae import nn, optim
    block = _blocks_of("optim.md")[0]
    assert block.startswith("opt = optim.Adam(")
    model, loss_fn = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), nn.MSELoss()
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    loss_fn(model(x), np.zeros((5, 2), np.float32))
    before = model[0].weight.data.copy()
    namespace = {"optim": optim, "model": model, "loss_fn": loss_fn}
    exec(compile(block, "docs/optim.md", "exec"), namespace)
    assert isinstance(namespace["opt"], optim.SGD) and not np.array_equal(model[0].weight.data, before)


def test_optim_page_state_dict_layout_is_adams():
    """optim.md's picture of ``opt.state_dict()`` (with ``...`` for what it leaves out) has the keys and the
    hyperparameters of a real Adam(lr=1e-3, weight_decay=1e-5) state dict after a step."""
    from minidae import nn, optim
    block = next(b for b in _blocks_of("optim.md") if b.startswith('{"state"'))
    shown = eval(block.replace(", ...}", "}"), {"array": np.array})  # "..., " as the last key: entries left out
    model, loss_fn = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), nn.MSELoss()
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn(model(np.ones((2, 4), np.float32)), np.zeros((2, 2), np.float32))
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
    real = opt.state_dict()
    assert set(shown) == set(real)
    assert set(shown["state"][0]) == set(real["state"][0]) and real["state"][0]["step"].dtype == np.int64
    (group,), (real_group,) = shown["param_groups"], real["param_groups"]
    assert set(group) == set(real_group)
    assert {k: v for k, v in group.items() if k != "params"} == {k: v for k, v in real_group.items() if k != "params"}
    assert real_group["params"][:2] == group["params"][:2]


def test_architecture_buffer_block_registers_what_it_says():
    """architecture.md's register_buffer lines, run in an ``__init__``: two buffers in the state dict, in order,
    the counter 0-d int64, and the one registered as None left out."""
    import numpy
    from minidae import backend, nn
    block = next(b for b in _blocks_of("architecture.md") if "register_buffer" in b)

    class WithBuffers(nn.Module):
        def __init__(self, num_features):
            super().__init__()
            exec(compile(block, "docs/architecture.md", "exec"),
                 {"self": self, "backend": backend, "numpy": numpy, "num_features": num_features})

    module = WithBuffers(3)
    assert list(module.state_dict()) == ["running_mean", "num_batches_tracked"]
    assert module.running_var is None and "running_var" in module._buffers
    assert module.num_batches_tracked.shape == () and module.num_batches_tracked.dtype == np.int64
    assert not list(module.parameters())
