"""The layout holds (server-free): every SQL wrapper passes its arguments in the order and
under the names of its Python function's parameters, every module says what it holds, and
modules use each other only through public names and top-level imports."""

import ast
import importlib
import inspect
import os
import pkgutil
import re

import pytest

import pgvision
from conftest import ROOT

HEADS = ("pgvision.sql", "pgvision_cluster.sql")
STATEMENT = re.compile(r"CREATE (?:FUNCTION|PROCEDURE) ([\w.]+)\((.*?)\)(\s.*?) AS \$\$\n(.*?)\$\$;",
                       re.S)
CALL = re.compile(r"return \[?spi\.(call|call_no_spi)\(plpy, (?:GD, )?([\w.]+)(?:,(.*?))?\)\]?\s*$",
                  re.S)
DIRECT = re.compile(r"return ([a-z]+)\.(\w+)\((.*?)\)\s*$", re.S)
MODULES = sorted(m.name for m in pkgutil.iter_modules(pgvision.__path__))


def wrappers():
    for head in HEADS:
        with open(os.path.join(ROOT, "sql", head)) as fh:
            for name, params, header, body in STATEMENT.findall(fh.read()):
                if "LANGUAGE plpython3u" in header:
                    yield name, params, body


def sql_inputs(params):
    """Names of the IN arguments (INOUT/OUT ones are the procedure's results)."""
    names = []
    for param in re.split(r",(?![^()]*\))", params):
        words = param.split()
        if words and words[0].upper() not in ("INOUT", "OUT"):
            names.append(words[0])
    return names


def resolve(dotted):
    *module, attribute = dotted.split(".")
    module = ".".join(module)
    return getattr(importlib.import_module(module if module.startswith("pgvision")
                                           else f"pgvision.{module}"), attribute)


WRAPPERS = list(wrappers())


def test_the_heads_hold_every_wrapper():
    assert len(WRAPPERS) > 40


@pytest.mark.parametrize("name,params,body", WRAPPERS, ids=[w[0] for w in WRAPPERS])
def test_a_wrapper_passes_its_arguments_by_the_python_names(name, params, body):
    if body == "import pgvision\nreturn pgvision.__version__\n":
        return
    match = CALL.search(body)
    if match:
        kind, target, args = match.groups()
        args = args or ""
        skip = 2 if kind == "call" else 0  # call: fn(plpy, GD, ...); call_no_spi: fn(GD, ...)
    else:
        match = DIRECT.search(body)
        assert match, f"{name}: the body calls no pgvision function:\n{body}"
        target, args, skip = f"{match.group(1)}.{match.group(2)}", match.group(3), 0
    passed = [a.strip() for a in args.split(",") if a.strip()]
    python = list(inspect.signature(resolve(target)).parameters.values())[skip:]
    assert passed == [p.name for p in python[:len(passed)]], \
        f"{name} passes {passed} to {target}{[p.name for p in python]}"
    assert all(p.default is not inspect.Parameter.empty for p in python[len(passed):]), \
        f"{target} has parameters {name} does not pass"
    sql = sql_inputs(params)
    assert [a for a in passed if a not in ("plpy", "GD")] == sql, \
        f"{name} takes {sql} but passes {passed}"


@pytest.mark.parametrize("module", MODULES)
def test_a_module_opens_with_what_it_holds(module):
    doc = importlib.import_module(f"pgvision.{module}").__doc__
    assert doc and doc.strip().split("\n")[0].strip(), f"pgvision.{module} has no docstring"


def parsed(module):
    with open(os.path.join(os.path.dirname(pgvision.__file__), f"{module}.py")) as fh:
        return ast.parse(fh.read())


@pytest.mark.parametrize("module", MODULES)
def test_package_imports_are_at_the_top_of_a_module(module):
    for node in ast.walk(parsed(module)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    assert inner.level == 0 and not (inner.module or "").startswith("pgvision"), \
                        f"pgvision.{module}: {node.name} imports from the package inside a function"


@pytest.mark.parametrize("module", MODULES)
def test_private_names_stay_in_their_module(module):
    for node in ast.walk(parsed(module)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in MODULES and node.attr.startswith("_"):
            pytest.fail(f"pgvision.{module} uses {node.value.id}.{node.attr}")


# --- each enumeration and default is declared once, in Python; the SQL must agree ----------

def sql_defaults(params):
    """{name: SQL default text} of a wrapper's IN arguments."""
    out = {}
    for param in re.split(r",(?![^()]*\))", params):
        match = re.match(r"\s*(?:IN\s+)?(\w+)\s+.*?\bDEFAULT\s+(.+?)\s*$", param, re.S | re.I)
        if match and match.group(1).upper() not in ("INOUT", "OUT"):
            out[match.group(1)] = match.group(2)
    return out


def sql_literal(text):
    """The Python value of a simple SQL default (NULL, a number, a boolean, a string)."""
    text = re.sub(r"::[\w\[\]]+$", "", text.strip())
    if text.upper() == "NULL":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    try:
        return int(text)
    except ValueError:
        return float(text)


def python_target(body):
    match = CALL.search(body)
    if match:
        return resolve(match.group(2)), (match.group(3) or "")
    match = DIRECT.search(body)
    return (resolve(f"{match.group(1)}.{match.group(2)}"), match.group(3)) if match else (None, "")


@pytest.mark.parametrize("name,params,body", WRAPPERS, ids=[w[0] for w in WRAPPERS])
def test_sql_defaults_are_the_python_defaults(name, params, body):
    """A SQL DEFAULT says what the Python function's default says; a Python default of None
    for ``model`` means pgvision.DEFAULT_MODEL, the one place the default model is named."""
    function, _ = python_target(body)
    if function is None:
        return
    python = inspect.signature(function).parameters
    for arg, text in sql_defaults(params).items():
        if arg not in python or python[arg].default is inspect.Parameter.empty:
            continue
        value, default = sql_literal(text), python[arg].default
        if arg == "model" and default is None and value is not None:
            assert value == pgvision.DEFAULT_MODEL, f"{name}: model DEFAULT {text}"
        elif default is None or arg in ("source", "image_column", "id_column"):
            continue  # None: the Python side works it out (e.g. the only table with features)
        else:
            assert value == default, f"{name}: {arg} DEFAULT {text} but Python says {default!r}"


ENUMERATIONS = {  # a CHECK (column IN (...)) of the head -> the Python tuple it must equal
    "preprocessing": "pgvision.images.PREPROCESSING",
    "pooling": "pgvision.pooling.POOLING",
    "metric": "pgvision.neighbours.METRICS",
    "storage": "pgvision.ann.STORAGES",
    "method": ("pgvision.learners.METHODS", "pgvision.ann.METHODS"),  # classifiers, indexes
}


def test_sql_checks_list_the_python_enumerations():
    with open(os.path.join(ROOT, "sql", "pgvision.sql")) as fh:
        checks = re.findall(r"CHECK \((\w+) IN \(([^)]*)\)\)", fh.read())
    seen = set()
    for column, values in checks:
        if column not in ENUMERATIONS:
            continue
        names = ENUMERATIONS[column]
        names = (names,) if isinstance(names, str) else names
        listed = tuple(v.strip().strip("'") for v in values.split(","))
        matching = [name for name in names if listed == tuple(getattr(
            importlib.import_module(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]))]
        assert matching, f"CHECK ({column} IN {listed}) lists none of {names}"
        seen.update(matching)
    assert seen == {name for names in ENUMERATIONS.values()
                    for name in ((names,) if isinstance(names, str) else names)}


def test_the_command_line_names_the_default_model_through_the_package():
    """No command spells the default model out: pgvision.DEFAULT_MODEL says it."""
    folder = os.path.join(ROOT, "plpython", "pgvision_cli")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as fh:
                assert f'"{pgvision.DEFAULT_MODEL}"' not in fh.read(), name


@pytest.mark.parametrize("module", MODULES)
def test_every_name_a_module_uses_of_another_exists(module):
    """``featurestore.load_for`` and the like name something the other module defines (a
    moved or renamed function is found here, not by the first query that reaches it)."""
    tree = parsed(module)
    imported = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
                for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in imported and node.value.id in MODULES:
            other = importlib.import_module(f"pgvision.{node.value.id}")
            assert hasattr(other, node.attr), \
                f"pgvision.{module} uses {node.value.id}.{node.attr}, which does not exist"
