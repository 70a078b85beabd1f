"""Generate the API reference pages from the public API's docstrings.

    python docs/gen_api.py                  # writes docs/api.md and docs/api_video.md
    python docs/gen_api.py --out-dir DIR    # elsewhere (the test compares them with docs/)
    python docs/gen_api.py --out X.md       # only the otcluster page, to X.md

``api.md`` documents every name in ``otcluster.__all__`` and ``otcluster.metrics.__all__``;
``api_video.md`` every name in ``otcluster_video.__all__`` (it needs the ``video`` extra). Each
entry: the signature (``inspect.signature``) and the numpydoc docstring turned into Markdown;
for classes, the methods and properties defined by the class itself. ``tests/test_docs.py``
checks that the committed pages are what this script writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

# page -> (modules documented, in order; a later module skips the names of the first), intro
PAGES = {
    "api.md": (
        ("otcluster", "otcluster.metrics"),
        "Import every name from the package, e.g. `from otcluster import sinkhorn`; the metrics "
        "also live in `otcluster.metrics`. The video recipe has its own page: "
        "[api_video.md](api_video.md).",
    ),
    "api_video.md": (
        ("otcluster_video",),
        "The SeLaVi video recipe (`pip install 'otcluster[video]'`). Import every name from the "
        "package, e.g. `from otcluster_video import prepare`; the command line is described in "
        "[video.md](video.md), the core library in [api.md](api.md).",
    ),
}
SECTION_RE = re.compile(r"^([A-Z][A-Za-z ]+)\n-{3,}\s*$", re.M)
LIST_SECTIONS = {"Parameters", "Returns", "Yields", "Attributes", "Raises", "Warns",
                 "Other Parameters"}


def _inline(text: str) -> str:
    """RST inline markup to Markdown: ``code`` -> `code`, :func:`x` -> `x`."""
    text = re.sub(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"::$", ":", text, flags=re.M)  # RST literal-block marker
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _sections(doc: str) -> list[tuple[str, str]]:
    """[(title, body)] with title "" for the text before the first numpydoc header."""
    out = []
    pos, title = 0, ""
    for m in SECTION_RE.finditer(doc):
        out.append((title, doc[pos:m.start()]))
        title, pos = m.group(1).strip(), m.end()
    out.append((title, doc[pos:]))
    return [(t, b.strip("\n")) for t, b in out if b.strip() or t]


def _list_section(body: str) -> list[str]:
    """numpydoc entries ``name : type`` + indented description -> Markdown bullets."""
    lines, entry, desc = [], None, []

    def flush():
        if entry is not None:
            name, _, typ = entry.partition(" : ")
            head = f"- **{_inline(name.strip())}**" + (f" ({_inline(typ.strip())})" if typ else "")
            text = " ".join(d.strip() for d in desc if d.strip())
            lines.append(head + (f": {_inline(text)}" if text else ""))

    for raw in body.splitlines():
        if raw and not raw.startswith(" "):
            flush()
            entry, desc = raw, []
        else:
            desc.append(raw)
    flush()
    return lines


def _text_block(body: str) -> list[str]:
    """Prose with indented literal blocks kept as code."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", body):
        if not para.strip():
            continue
        if all(ln.startswith("    ") or not ln.strip() for ln in para.splitlines()):
            out += ["```text", inspect.cleandoc(para), "```", ""]
        else:
            out += [_inline(para.strip()), ""]
    return out


def render_doc(doc: str | None) -> list[str]:
    if not doc:
        return ["*(no docstring)*", ""]
    doc = inspect.cleandoc(doc)
    out: list[str] = []
    for title, body in _sections(doc):
        if title:
            out += [f"**{title}**", ""]
        if title in LIST_SECTIONS:
            out += _list_section(body) + [""]
        elif title == "Examples":
            out += ["```pycon", body, "```", ""]
        else:
            out += _text_block(body)
    return out


def _signature(obj, name: str) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return name
    sig = re.sub(r" at 0x[0-9a-f]+", "", sig)  # no memory addresses in the output
    return f"{name}{sig}"


def _members(cls) -> list[tuple[str, object]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_") or name in getattr(cls, "_fields", ()):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            out.append((name, value))
    return out


def _kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "exception"
        if hasattr(obj, "_fields"):
            return "named tuple"
        if dataclasses.is_dataclass(obj):
            return "dataclass"
        return "class"
    return "function"


def render_object(qual: str, obj) -> list[str]:
    short = qual.rsplit(".", 1)[-1]
    out = [f"### `{short}`", "", f"*{_kind(obj)}* — `{qual}`", ""]
    if inspect.ismodule(obj) or (inspect.isclass(obj) and issubclass(obj, BaseException)):
        out += render_doc(obj.__doc__)
        return out
    out += ["```python no-run", _signature(obj, short), "```", ""]
    out += render_doc(obj.__doc__)
    if inspect.isclass(obj):
        for name, member in _members(obj):
            if isinstance(member, property):
                out += [f"#### `{short}.{name}` (property)", ""] + render_doc(member.__doc__)
            else:
                out += [f"#### `{short}.{name}`", "", "```python no-run",
                        _signature(member, name), "```", ""] + render_doc(member.__doc__)
    return out


def generate(page: str = "api.md") -> str:
    modules, intro = PAGES[page]
    title = "API reference" + (f": `{modules[0]}`" if page != "api.md" else "")
    lines = [f"# {title}", "",
             "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand "
             "(`tests/test_docs.py` checks that this file is up to date). " + intro, ""]
    body: list[str] = []
    for modname in modules:
        mod = importlib.import_module(modname)
        names = list(getattr(mod, "__all__", []))
        if modname != modules[0]:
            top = importlib.import_module(modules[0])
            names = [n for n in names if n not in getattr(top, "__all__", [])]
        if not names:
            continue
        lines += [f"**`{modname}`**", ""]
        objs = {n: getattr(mod, n) for n in names}
        mods = sorted(n for n, o in objs.items() if inspect.ismodule(o))
        funcs = sorted(n for n, o in objs.items() if not inspect.isclass(o) and n not in mods)
        classes = sorted(n for n, o in objs.items() if inspect.isclass(o))
        for group, members in (("Functions", funcs), ("Classes", classes), ("Modules", mods)):
            if members:
                lines.append(f"- {group}: " + ", ".join(f"[`{n}`](#{n.lower()})" for n in members))
        lines.append("")
        body += [f"## `{modname}`", ""]
        for n in funcs + classes + mods:
            body += render_object(f"{modname}.{n}", getattr(mod, n))
    text = "\n".join(lines + body)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent,
                   help="folder of the pages (default: docs/)")
    p.add_argument("--out", type=Path, default=None,
                   help="write only the otcluster page (api.md) to this file")
    a = p.parse_args(argv)
    targets = {"api.md": a.out} if a.out is not None else {pg: a.out_dir / pg for pg in PAGES}
    for page, out in targets.items():
        out.write_text(generate(page))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
