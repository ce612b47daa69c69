#!/usr/bin/env python3
"""Generates the Jupyter notebooks in notebooks/ from the notebook-style examples.

The examples are the one source of truth; each notebook walks through the same question as its
example, cell by cell, on the Rust kernel evcxr (`evcxr_jupyter`):

- the example's `//!` doc becomes the first Markdown cell;
- a cell of `:dep` lines: eddy by path (`..`, the repository root seen from notebooks/) and the
  example's other dependencies at the versions in the root Cargo.toml;
- the helpers of examples/common/mod.rs as `mod common { ... }` (tables render as Markdown and
  plots as inline SVG when they run under evcxr: `common::in_notebook`);
- the example's items (types, functions, the cell, ...) in one cell;
- the body of `main`, cut at each `step(N, "title")` call: a Markdown heading with the `//`
  comments that follow it, then the step's code.

In the notebooks `env!("CARGO_MANIFEST_DIR")` (the repository root in an example) becomes `".."`:
Jupyter runs a kernel in the notebook's folder. evcxr keeps a cell's top-level variables for the
next cells only when they own their data and their types can be named (not a closure, not a
borrow); so a step that binds more than later steps use becomes a block that hands out only
what they use (`keep_for_later`). A closure that a later step calls must be a function among
the example's items.

    python3 tools/notebooks.py           # writes notebooks/*.ipynb
    python3 tools/notebooks.py --check   # exits 1 if a notebook is not what the examples give (CI)
"""

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["forecast", "custom_cell", "vanishing_gradients"]


def deps(example_src: str) -> list[str]:
    """The `:dep` lines of a notebook: eddy by path, and what the example and common/ use."""
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    ws = cargo["workspace"]["dependencies"]
    dev = cargo["dev-dependencies"]

    def spec(value) -> str:
        if isinstance(value, str):
            return json.dumps(value)
        if isinstance(value, dict) and value.get("workspace"):
            raise ValueError("resolve workspace = true before calling spec")
        parts = []
        for k, v in value.items():
            if isinstance(v, bool):
                parts.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, list):
                parts.append(f"{k} = [{', '.join(json.dumps(x) for x in v)}]")
            else:
                parts.append(f"{k} = {json.dumps(v)}")
        return "{ " + ", ".join(parts) + " }"

    lines = [':dep eddy = { path = ".." }', f":dep ndarray = {spec(ws['ndarray'])}"]
    if "rayon" in example_src:
        lines.append(f":dep rayon = {spec(ws['rayon'])}")
    lines.append(f":dep plotters = {spec(dev['plotters'])}")
    return lines


def markdown_cell(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": lines_of(text)}


def code_cell(text: str) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": lines_of(text),
    }


def lines_of(text: str) -> list[str]:
    text = text.strip("\n")
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def for_notebook(code: str) -> str:
    """Example code as a notebook runs it: the repository root is `..`."""
    return code.replace('env!("CARGO_MANIFEST_DIR")', '".."')


def dedent4(lines: list[str]) -> list[str]:
    return [line[4:] if line.startswith("    ") else line.lstrip() for line in lines]


def split_example(src: str):
    """(module doc, items, main body lines) of an example."""
    lines = src.split("\n")
    doc = []
    i = 0
    while i < len(lines) and lines[i].startswith("//!"):
        doc.append(lines[i][4:] if lines[i].startswith("//! ") else lines[i][3:])
        i += 1
    rest = lines[i:]
    start = rest.index("fn main() -> AnyResult {")
    end = start + 1 + rest[start + 1 :].index("}")
    # The `///` docs or attributes right above main stay with it (there are none today).
    items = rest[:start] + rest[end + 1 :]
    items = [l for l in items if l not in ('#[path = "common/mod.rs"]', "mod common;")]
    body = dedent4(rest[start + 1 : end])
    for line in body:
        if re.search(r"\breturn\b(?!_)", line):
            # evcxr runs a cell's statements in a function returning its own error type: a
            # `return Err(..)` there does not compile.
            raise SystemExit(
                f"main of the example returns early ({line.strip()!r}): a notebook cell cannot; "
                "use `common::ensure(condition, message)?`"
            )
    while body and body[-1].strip() in ("Ok(())", ""):
        body.pop()
    return "\n".join(doc), "\n".join(items).strip("\n"), body


STEP = re.compile(r'^step\(\s*(\d+),\s*"((?:[^"\\]|\\.)*)",?\s*\);$', re.S)
RULE = re.compile(r"^\s*// -{20,}\s*$")


def main_cells(body: list[str]) -> list[dict]:
    """The cells of `main`'s body: before the first step, then a heading and code per step."""
    cells = []
    code: list[str] = []

    def flush():
        text = "\n".join(code).strip("\n")
        if text:
            cells.append(code_cell(text))
        code.clear()

    i = 0
    while i < len(body):
        line = body[i]
        if RULE.match(line):
            i += 1
            continue
        if line.startswith("step("):
            call = [line]
            while not call[-1].rstrip().endswith(");"):
                i += 1
                call.append(body[i])
            m = STEP.match(" ".join(l.strip() for l in call).replace("( ", "(").replace(" )", ")"))
            if not m:
                raise SystemExit(f"cannot read the step call: {' '.join(call)}")
            flush()
            text = [f"## {m.group(1)}. {json.loads(chr(34) + m.group(2) + chr(34))}"]
            i += 1
            prose = []
            while i < len(body) and body[i].lstrip().startswith("// ") and not body[i].startswith(" "):
                prose.append(body[i].lstrip()[3:])
                i += 1
            if prose:
                text.append("")
                text.append(" ".join(prose))
            cells.append(markdown_cell("\n".join(text)))
            continue
        code.append(line)
        i += 1
    flush()
    return cells


def without_strings_and_comments(code: str) -> str:
    """`code` with its string and char literals and `//` comments blanked (for finding names)."""
    out = []
    i = 0
    while i < len(code):
        c = code[i]
        if code.startswith("//", i):
            while i < len(code) and code[i] != "\n":
                i += 1
        elif c == '"':
            start = i
            i += 1
            while i < len(code) and code[i] != '"':
                i += 2 if code[i] == "\\" else 1
            i += 1
            # A format string's inline arguments (`{name}`, `{name:?}`) use the names.
            out.append(" ".join(re.findall(r"\{([a-z_][a-z0-9_]*)", code[start:i])) or '""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", code[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", code[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


LET = re.compile(r"^let\s+(.*?)\s*(?::[^=]*)?=(?!=)\s*(.*)$")


def top_level_lets(code: str) -> list[tuple[str, bool, bool]]:
    """(name, declared `mut`, bound to a closure or a reference) of each `let` at the cell's top
    level, in order; a pattern binds each of its names."""
    found = []
    for line in without_strings_and_comments(code).split("\n"):
        m = LET.match(line)
        if not m:
            continue
        pattern, value = m.group(1), m.group(2)
        unpersistable = re.match(r"(move\s*)?\||&", value) is not None
        for mut, name in re.findall(r"\b(mut\s+)?([a-z_][a-z0-9_]*)\b", pattern):
            if name not in ("mut", "ref", "_"):
                found.append((name, bool(mut), unpersistable))
    return found


def used_names(code: str) -> set[str]:
    """The lower-case names `code` mentions, less fields, macros and path segments."""
    return set(re.findall(r"(?<![.\w])([a-z_][a-z0-9_]*)\b(?!\s*(?:!|::))", without_strings_and_comments(code)))


def bound_names(code: str) -> set[str]:
    """The names `code` binds anywhere: `let` patterns, closure parameters, `for` patterns."""
    plain = without_strings_and_comments(code)
    patterns = re.findall(r"\blet\s+(.*?)\s*[:=]", plain)
    patterns += re.findall(r"(?:^|[(,=\s])(?:move\s*)?\|([^|]*)\|", plain)
    patterns += re.findall(r"\bfor\s+(.*?)\s+in\b", plain)
    names = set()
    for pattern in patterns:
        # Drop type annotations (`x: &Tape<f64>`), keep the names.
        for name in re.findall(r"(?<![:<&\w])\s*\b([a-z_][a-z0-9_]*)\b(?!\s*[<(])", re.sub(r":[^,|)]*", "", pattern)):
            if name not in ("mut", "ref", "_"):
                names.add(name)
    return names


def keep_for_later(cells: list[str]) -> list[str]:
    """Each code cell of `main` as evcxr can run it at a notebook's top level.

    evcxr keeps a cell's top-level `let` variables for the next cells, which it can do only for
    owned values of nameable types: not a closure, not a borrow (the cell fails with "cannot be
    persisted"). So a cell that binds more than the later cells use becomes a block that hands
    out only those values (`let (a, b) = { ...; (a, b) };`); its closures and borrows stay inside.
    """
    out = []
    for k, code in enumerate(cells):
        later = set()
        for name in {n for n, _, _ in top_level_lets(code)}:
            for after in cells[k + 1 :]:
                if name in used_names(after) - bound_names(after):
                    later.add(name)
                    break
                if name in {n for n, _, _ in top_level_lets(after)}:
                    break
        last = {}
        for name, mut, unpersistable in top_level_lets(code):
            last.pop(name, None)
            last[name] = (mut, unpersistable)
        kept = [(n, mut) for n, (mut, unp) in last.items() if n in later and not unp]
        if len(kept) == len(last):
            out.append(code)
            continue
        body = "\n".join(("    " + line) if line else line for line in code.split("\n"))
        if not kept:
            # The `;` keeps evcxr from showing the block's value, `()`.
            out.append("{\n" + body + "\n};")
            continue
        names = ", ".join(n for n, _ in kept)
        bound = ", ".join(("mut " if mut else "") + n for n, mut in kept)
        if len(kept) == 1:
            out.append(f"let {bound} = {{\n{body}\n    {names}\n}};")
        else:
            out.append(f"let ({bound}) = {{\n{body}\n    ({names})\n}};")
    return out


def notebook(name: str) -> dict:
    src = (ROOT / "examples" / f"{name}.rs").read_text()
    common = (ROOT / "examples" / "common" / "mod.rs").read_text()
    doc, items, body = split_example(src)
    intro = (
        f"{doc}\n\n*This notebook is generated from `examples/{name}.rs` by `tools/notebooks.py`; "
        "edit the example, not the notebook. It runs on the Rust kernel evcxr: see "
        "[notebooks/README.md](README.md). With `EDDY_QUICK=1` in the kernel's environment it "
        "runs the small version CI runs.*"
    )
    cells = [
        markdown_cell(intro),
        markdown_cell(
            "Dependencies: eddy from this repository, and what the example uses. The first run "
            "compiles them (a few minutes); later runs reuse the build."
        ),
        code_cell("\n".join(deps(src))),
        markdown_cell(
            "The helpers shared by the examples (`examples/common/mod.rs`): flags, tables, SVG "
            "plots, data."
        ),
        code_cell(for_notebook("mod common {\n" + common.strip("\n") + "\n}")),
        markdown_cell("The example's definitions."),
        code_cell(for_notebook(items)),
    ]
    steps = main_cells(body)
    code = keep_for_later([for_notebook("".join(c["source"])) for c in steps if c["cell_type"] == "code"])
    for c in steps:
        cells.append(code_cell(code.pop(0)) if c["cell_type"] == "code" else c)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Rust", "language": "rust", "name": "rust"},
            "language_info": {
                "codemirror_mode": "rust",
                "file_extension": ".rs",
                "mimetype": "text/rust",
                "name": "Rust",
                "pygment_lexer": "rust",
                "version": "",
            },
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(nb: dict) -> str:
    # Cell ids (nbformat 4.5) from the position: stable across runs.
    for k, c in enumerate(nb["cells"]):
        c["id"] = f"cell-{k}"
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    check = "--check" in sys.argv[1:]
    out_dir = ROOT / "notebooks"
    stale = []
    for name in NOTEBOOKS:
        text = render(notebook(name))
        path = out_dir / f"{name}.ipynb"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            out_dir.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(
            "notebooks not up to date with examples/: " + ", ".join(stale) +
            "\nrun `python3 tools/notebooks.py` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
