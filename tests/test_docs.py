"""The docs stay true to the code: generated pages are current, and everything public is documented."""
import ast
import importlib
import importlib.util
import inspect
import pathlib
import pkgutil

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
    """The same check from the source text, for a module that cannot be imported here (minidae.cuda without CuPy)."""
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
        except ImportError:  # minidae.cuda needs CuPy: check its source instead
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
