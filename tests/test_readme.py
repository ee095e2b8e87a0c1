"""The README's commands and the documented examples are the ones that work."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def commands():
    return re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in commands() if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_training_command_runs_the_example_with_its_defaults():
    train_command = commands()[0]
    assert train_command.endswith("python examples/train_conv_dae.py")
    assert (ROOT / "examples" / "train_conv_dae.py").is_file()


def test_readme_images_exist():
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", README):
        assert (ROOT / image).is_file(), image


USAGE_BLOCKS = re.findall(r"```python\n(.*?)\n```", (ROOT / "docs" / "usage.md").read_text(), re.S)


@pytest.mark.parametrize("index", range(len(USAGE_BLOCKS)))
def test_usage_examples_run(index):
    blocks = USAGE_BLOCKS
    if "import torch" in blocks[index] or "safetensors.torch" in blocks[index]:
        pytest.importorskip("torch", reason="this example moves weights to PyTorch")
    namespace = {}
    for block in blocks[:index + 1]:  # later blocks may use names from earlier ones
        exec(compile(block, "docs/usage.md", "exec"), namespace)
    assert namespace["net"].conv6.weight.grad.any()


def test_every_maths_function_is_as_short_as_the_readme_says():
    """README: every function of minidae/nn/functional.py is at most N lines with its docstring (decorator too)."""
    import ast
    limit = int(re.search(r"none longer than (\d+) lines with its docstring", README.replace("\n", " ")).group(1))
    tree = ast.parse((ROOT / "minidae" / "nn" / "functional.py").read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    lengths = {f.name: f.end_lineno - min([f.lineno] + [d.lineno for d in f.decorator_list]) + 1 for f in functions}
    assert len(functions) > 40 and max(lengths.values()) <= limit, \
        {name: n for name, n in lengths.items() if n > limit}
