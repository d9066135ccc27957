"""Build the fewkit docs site: every notebook of nbs/ (with its committed outputs) and an API reference, as static HTML.

Usage: python scripts/docs.py [--out _docs] [--root .]

No quarto and no network: the notebooks' cells and their committed outputs (nothing is executed) are rendered with
mistune (Markdown) and Pygments (code), both installed with jupyterlab; the API reference is read from fewkit/ with
`ast` (no module is imported, so the build needs neither torch nor deepspeed and takes seconds). Pages load nothing
from the network (no CDN script, no web font). Page names follow nbdev
(`nbs/21_zero.ipynb` -> `zero.html`), and each page also has a Markdown twin `zero.html.md`: the `Docs:` links
that nbdev writes into every module docstring ([project.urls] Documentation + `<name>.html.md`) resolve there.
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import re
import shutil
import sys
import time
from pathlib import Path

import tomllib

# Chapters by the notebook's number: (first, last, title). index.ipynb is the home page.
CHAPTERS = [
    (0, 9, "0 · Foundations"),
    (10, 19, "1 · One device"),
    (20, 28, "2 · Many devices"),
    (29, 29, "The trainer"),
    (30, 39, "3 · Knowledge"),
    (40, 49, "4 · Pretraining"),
    (50, 59, "5 · Few-shot"),
    (90, 99, "Doors: command line, benches, demo"),
]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def page_name(nb: Path) -> str:
    "nbdev's nbpath2html: `21_zero.ipynb` -> `zero.html` (numeric prefix stripped)."
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.name.lower()).removesuffix(".ipynb") + ".html"


def chapter_of(nb: Path) -> str | None:
    "Chapter title for a numbered notebook, None for index.ipynb or an unnumbered one."
    m = re.match(r"^(\d+)", nb.name)
    if m is None:
        return None
    n = int(m.group(1))
    return next((t for lo, hi, t in CHAPTERS if lo <= n <= hi), "Other")


def title_of(cells: list) -> tuple[str, str]:
    "(title, subtitle) from the first markdown cell that starts with '# ' (nbdev's convention)."
    for c in cells:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "markdown" and src.startswith("# "):
            lines = src.splitlines()
            sub = " ".join(l[2:].strip() for l in lines[1:] if l.startswith("> "))
            return lines[0][2:].strip(), sub
    return "", ""


def directives(src: str) -> dict[str, str]:
    "nbdev/quarto cell directives (`#| hide`, `#| echo: false`): {name: value}."
    out = {}
    for line in src.splitlines():
        m = re.match(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
        elif line.strip():
            break
    return out


def text(v) -> str:
    "A notebook string field: on disk a list of lines or one string."
    return "".join(v) if isinstance(v, list) else v


def prepare(nb: dict) -> dict:
    "Drop hidden cells, directive lines and widget views (their state needs a CDN script); joins line lists."
    keep = []
    for c in nb["cells"]:
        src = text(c["source"])
        d = directives(src)
        if "hide" in d or d.get("include") == "false":
            continue
        c["source"] = "\n".join(l for l in src.splitlines() if not re.match(r"^\s*#\|", l)).strip("\n")
        c["echo"] = d.get("echo") != "false"
        outs = []
        for o in c.get("outputs", []) if d.get("output") != "false" else []:
            if "text" in o:
                o["text"] = text(o["text"])
            data = {k: text(v) if isinstance(v, (list, str)) else v for k, v in o.get("data", {}).items()}
            if WIDGET_MIME in data:
                continue  # a progress-bar widget: its text/plain is "HBox(...)", nothing a reader needs
            o["data"] = data
            outs.append(o)
        c["outputs"] = outs
        keep.append(c)
    nb["cells"] = keep
    return nb


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal_text(s: str) -> str:
    "What a terminal would show: ANSI colours dropped, each line as left by its last carriage return (tqdm bars)."
    s = ANSI.sub("", s)
    return "\n".join(
        line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r") for line in s.split("\n")
    )


class Renderer:
    "Notebook cells to HTML: Markdown through mistune, code through Pygments, outputs by MIME type (trusted notebooks)."

    def __init__(self):
        import mistune
        from pygments.formatters import HtmlFormatter

        try:
            from ipython_pygments_lexers import IPython3Lexer as Lexer  # `!cmd` and `%magic` lines too
        except ImportError:
            from pygments.lexers import PythonLexer as Lexer
        self.md = mistune.create_markdown(escape=False, plugins=["table", "strikethrough", "url"])
        self.lexer = Lexer()
        self.fmt = HtmlFormatter(cssclass="highlight")
        self.ids = set()

    def heading_ids(self, h: str) -> str:
        "Give every heading a unique id and a ¶ anchor link (as Jupyter does)."

        def one(m):
            level, inner = m.group(1), m.group(2)
            base = re.sub(r"\s+", "-", html.unescape(re.sub(r"<[^>]+>", "", inner)).strip()) or "section"
            hid = base
            k = 1
            while hid in self.ids:
                k += 1
                hid = f"{base}-{k}"
            self.ids.add(hid)
            a = esc(hid)
            return f'<h{level} id="{a}">{inner}<a class="anchor-link" href="#{a}">¶</a></h{level}>'

        return re.sub(r"<h([1-6])>(.*?)</h\1>", one, h, flags=re.DOTALL)

    def markdown(self, src: str) -> str:
        return self.heading_ids(self.md(src))

    def code(self, src: str) -> str:
        from pygments import highlight

        return highlight(src, self.lexer, self.fmt)

    def output(self, o: dict) -> str:
        kind = o.get("output_type")
        if kind == "stream":
            cls = "stderr" if o.get("name") == "stderr" else "stdout"
            return f'<div class="output {cls}"><pre>{esc(terminal_text(o["text"]))}</pre></div>'
        if kind == "error":
            tb = terminal_text("\n".join(o.get("traceback", [])) or f"{o.get('ename')}: {o.get('evalue')}")
            return f'<div class="output error"><pre>{esc(tb)}</pre></div>'
        data = o.get("data", {})
        for mime in ("image/png", "image/jpeg"):
            if mime in data:
                alt = esc(data.get("text/plain", "figure").strip()[:120])
                src = "".join(data[mime].split())
                return f'<div class="output image"><img src="data:{mime};base64,{src}" alt="{alt}"></div>'
        if "image/svg+xml" in data:
            return f'<div class="output image">{data["image/svg+xml"]}</div>'
        if "text/html" in data:
            return f'<div class="output html">{data["text/html"]}</div>'
        if "text/markdown" in data:
            return f'<div class="output markdown">{self.markdown(data["text/markdown"])}</div>'
        if "text/plain" in data:
            return f'<div class="output text"><pre>{esc(terminal_text(data["text/plain"]))}</pre></div>'
        return ""

    def notebook(self, nb: dict) -> str:
        self.ids = set()
        out = []
        for c in nb["cells"]:
            if c["cell_type"] == "markdown":
                out.append(f'<div class="cell md">{self.markdown(c["source"])}</div>')
            elif c["cell_type"] == "code":
                parts = [self.code(c["source"])] if c["echo"] and c["source"].strip() else []
                parts += [self.output(o) for o in c["outputs"]]
                if parts:
                    out.append(f'<div class="cell code">{"".join(parts)}</div>')
        return "\n".join(out)


class Site:
    "Everything the pages share: where things are, the page list, the navigation."

    def __init__(self, root: Path, out: Path):
        self.root = root
        self.out = out
        self.nbs = root / "nbs"
        proj = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        self.repo_url = proj.get("urls", {}).get("Repository", "").rstrip("/")
        self.doc_url = proj.get("urls", {}).get("Documentation", "")
        self.name = proj["name"]
        self.description = proj.get("description", "")
        self.pages = []  # dicts: nb, page, title, sub, chapter, module
        self.modules = []  # dicts: name, path, page, summary, nb
        self.problems = []  # broken internal links found while rendering (the test fails on them too)

    # ---- collection -------------------------------------------------------------------------------------------
    def collect(self):
        "Read the notebooks' titles and modules, and the modules' names."
        # the home page first, then the chapters in their numbered order (previous / next follow this list)
        for nb in sorted(self.nbs.glob("*.ipynb"), key=lambda p: (p.name != "index.ipynb", p.name)):
            cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
            title, sub = title_of(cells)
            module = None
            for c in cells:
                src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                m = re.search(r"^#\|\s*default_exp\s+(\S+)", src, re.MULTILINE)
                if c["cell_type"] == "code" and m:
                    module = f"{self.name}.{m.group(1)}"
                    break
            self.pages.append(
                dict(nb=nb, page=page_name(nb), title=title or nb.stem, sub=sub, chapter=chapter_of(nb), module=module)
            )
        pkg = self.root / self.name
        for py in sorted(pkg.rglob("*.py")):
            if py.name == "_modidx.py" or "__pycache__" in py.parts:
                continue
            rel = py.relative_to(self.root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join(parts)
            src = py.read_text(encoding="utf-8")
            tree = ast.parse(src)
            if py.name == "__init__.py" and not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body):
                continue  # a package marker (version string only): no page
            doc = ast.get_docstring(tree) or ""
            m = re.search(r"File to edit: (\S+?\.ipynb)", src)
            nb = (py.parent / m.group(1)).resolve() if m else None
            self.modules.append(
                dict(name=name, path=py, src=src, tree=tree, page=f"api/{name}.html", summary=summary(doc), nb=nb)
            )
        names = [p["page"] for p in self.pages]
        for n in sorted({n for n in names if names.count(n) > 1}):
            self.problems.append(
                f"two notebooks make the page {n}: " + ", ".join(p["nb"].name for p in self.pages if p["page"] == n)
            )
        self.by_nb = {p["nb"].resolve(): p for p in self.pages}
        self.by_module = {m["name"]: m for m in self.modules}

    # ---- page shell -------------------------------------------------------------------------------------------
    def nav(self, up: str, current: str) -> str:
        "The sidebar: home, every chapter with its notebooks, the API reference."
        items = [f'<a class="home{" on" if current == "index.html" else ""}" href="{up}index.html">{self.name}</a>']
        for _, _, chap in CHAPTERS:
            pages = [p for p in self.pages if p["chapter"] == chap]
            if not pages:
                continue
            links = "".join(
                f'<li><a{" class=on" if p["page"] == current else ""} href="{up}{p["page"]}" title="{esc(p["title"])}">'
                f"{inline(short_title(p))}</a></li>"
                for p in pages
            )
            items.append(f"<details open><summary>{esc(chap)}</summary><ul>{links}</ul></details>")
        on = " class=on" if current == "api/index.html" else ""
        items.append(
            f"<details{' open' if current.startswith('api/') else ''}><summary>API reference</summary>"
            f'<ul><li><a{on} href="{up}api/index.html">All modules</a></li>'
        )
        items.append(
            "".join(
                f'<li><a{" class=on" if m["page"] == current else ""} href="{up}{m["page"]}"><code>{esc(m["name"])}</code></a></li>'
                for m in self.modules
            )
            + "</ul></details>"
        )
        return "\n".join(items)

    def shell(self, current: str, title: str, body: str, extra: str = "") -> str:
        "A whole page: head (local CSS only), sidebar, content."
        up = "../" * current.count("/")
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · {esc(self.name)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{up}assets/style.css"><link rel="stylesheet" href="{up}assets/pygments.css">
</head><body>
<nav class="side">{self.nav(up, current)}</nav>
<main>{body}{extra}</main>
<script>document.querySelector("nav.side a.on")?.scrollIntoView({{block: "center"}});</script>
</body></html>
"""

    # ---- links ------------------------------------------------------------------------------------------------
    def fix_links(self, body: str, nb: Path, up: str) -> str:
        "Notebook links -> their pages; other relative links -> the repository file; images copied beside the page."
        src_dir = nb.parent

        def href(m):
            attr, q, v = m.group(1), m.group(2), m.group(3)
            if re.match(r"^(?:[a-z][a-z0-9+.-]*:|#|//)", v, re.IGNORECASE):
                return m.group(0)
            path, _, frag = html.unescape(v).partition("#")
            target = (src_dir / path).resolve()
            if path.endswith(".ipynb"):
                page = self.by_nb.get(target)
                if page is None:
                    self.problems.append(f"{nb.name}: link to missing notebook {path}")
                    new = up + page_name(Path(path))
                else:
                    new = up + page["page"]
            elif attr == "src" and target.is_file() and self.nbs in target.parents:
                dest = self.out / target.relative_to(self.nbs)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(target, dest)
                new = up + target.relative_to(self.nbs).as_posix()
            elif self.root in target.parents or target == self.root:
                if not target.exists():
                    self.problems.append(f"{nb.name}: link to missing file {path}")
                kind = "tree" if target.is_dir() else "blob"
                new = f"{self.repo_url}/{kind}/main/{target.relative_to(self.root).as_posix()}"
            else:
                self.problems.append(f"{nb.name}: link outside the repository: {v}")
                new = path
            return f"{attr}={q}{html.escape(new + ('#' + frag if frag else ''))}{q}"

        return re.sub(r'\b(href|src)=(["\'])(.*?)\2', href, body)

    # ---- notebook pages ---------------------------------------------------------------------------------------
    def render_notebooks(self):
        "One HTML page and one Markdown twin per notebook, from the committed outputs (nothing is executed)."
        self.timings = {}
        render = Renderer()
        for i, p in enumerate(self.pages):
            t0 = time.process_time()
            nb = prepare(json.loads(p["nb"].read_text(encoding="utf-8")))
            body = render.notebook(nb)
            body = self.fix_links(body, p["nb"], "")
            extra = self.page_footer(i, p)
            (self.out / p["page"]).write_text(self.shell(p["page"], p["title"], body, extra), encoding="utf-8")
            md = to_markdown(nb, p["page"].removesuffix(".html"), self.out)
            (self.out / f"{p['page']}.md").write_text(md, encoding="utf-8")
            self.timings[p["page"]] = time.process_time() - t0

    def page_footer(self, i: int, p: dict) -> str:
        "Links to the module's API page, the source notebook, and the previous / next notebook."
        bits = []
        if p["module"] in self.by_module:
            bits.append(f'API: <a href="{self.by_module[p["module"]]["page"]}"><code>{esc(p["module"])}</code></a>')
        rel = p["nb"].relative_to(self.root).as_posix()
        bits.append(f'source: <a href="{self.repo_url}/blob/main/{rel}">{esc(rel)}</a>')
        prev = self.pages[i - 1] if i > 0 else None
        nxt = self.pages[i + 1] if i + 1 < len(self.pages) else None
        arrows = ""
        if prev:
            arrows += f'<a class="prev" href="{prev["page"]}">← {inline(prev["title"])}</a>'
        if nxt:
            arrows += f'<a class="next" href="{nxt["page"]}">{inline(nxt["title"])} →</a>'
        return f'<footer><p>{" · ".join(bits)}</p><p class="pn">{arrows}</p></footer>'

    # ---- home -------------------------------------------------------------------------------------------------
    def render_index(self):
        "index.html: the index notebook (the README), then every chapter's notebooks with their one-line subtitles."
        home = next((p for p in self.pages if p["page"] == "index.html"), None)
        rows = []
        for _, _, chap in CHAPTERS:
            pages = [p for p in self.pages if p["chapter"] == chap]
            if not pages:
                continue
            li = "".join(
                f'<li><a href="{p["page"]}">{inline(p["title"])}</a>'
                + (f' <span class="mod"><code>{esc(p["module"])}</code></span>' if p["module"] else "")
                + (f'<br><span class="sub">{inline(p["sub"])}</span>' if p["sub"] else "")
                + "</li>"
                for p in pages
            )
            rows.append(f'<h2 id="{slug(chap)}">{esc(chap)}</h2><ul class="toc">{li}</ul>')
        toc = '<section class="chapters"><h1 id="chapters">Chapters</h1>' + "".join(rows)
        toc += '<p>Every module, function and class: <a href="api/index.html">API reference</a>.</p></section>'
        if home is None:
            body = f"<h1>{esc(self.name)}</h1><p>{esc(self.description)}</p>"
            (self.out / "index.html").write_text(self.shell("index.html", self.name, body, toc), encoding="utf-8")
        else:
            path = self.out / "index.html"
            text = path.read_text(encoding="utf-8")
            # the notebook page is already written: put the chapter list after its content, before the footer
            path.write_text(text.replace("<footer>", toc + "<footer>", 1), encoding="utf-8")

    # ---- API reference ----------------------------------------------------------------------------------------
    def render_api(self):
        "api/<module>.html for every module and api/index.html listing them."
        (self.out / "api").mkdir(parents=True, exist_ok=True)
        for m in self.modules:
            body = self.api_page(m)
            (self.out / m["page"]).write_text(self.shell(m["page"], m["name"], body), encoding="utf-8")
        rows = "".join(
            f'<tr><td><a href="{m["name"]}.html"><code>{esc(m["name"])}</code></a></td><td>{inline(m["summary"])}</td></tr>'
            for m in self.modules
        )
        body = (
            '<h1 id="api-reference">API reference</h1><p>Every module of the package, read from its source: the '
            "signatures and docstrings of what it exports (<code>__all__</code>). The notebooks explain and test "
            f'them.</p><table class="api">{rows}</table>'
        )
        (self.out / "api/index.html").write_text(self.shell("api/index.html", "API reference", body), encoding="utf-8")

    def api_page(self, m: dict) -> str:
        "One module: docstring, then each public function / class / constant with its signature and docstring."
        tree, src = m["tree"], m["src"]
        lines = src.splitlines()
        public = module_all(tree)
        defs = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        defs.setdefault(t.id, node)
        if public is None:
            public = [n for n in defs if not n.startswith("_")]
        doc = ast.get_docstring(tree) or ""
        doc = "\n".join(l for l in doc.splitlines() if not l.startswith("Docs: "))
        parts = [f'<h1 id="{slug(m["name"])}"><code>{esc(m["name"])}</code></h1>', docstring_html(doc)]
        links = []
        page = self.by_nb.get(m["nb"]) if m["nb"] else None
        if page:
            links.append(f'explained in <a href="../{page["page"]}">{esc(page["title"])}</a>')
        rel = m["path"].relative_to(self.root).as_posix()
        links.append(f'source: <a href="{self.repo_url}/blob/main/{rel}">{esc(rel)}</a>')
        parts.append(f'<p class="meta">{" · ".join(links)}</p>')
        if public:
            parts.append(
                '<p class="meta">'
                + ", ".join(f'<a href="#{esc(n)}"><code>{esc(n)}</code></a>' for n in public if n in defs)
                + "</p>"
            )
        for name in public:
            node = defs.get(name)
            if node is None:
                continue  # re-exported from another module
            parts.append(self.api_entry(name, node, lines))
        return "\n".join(parts)

    def api_entry(self, name: str, node, lines: list[str]) -> str:
        "One function, class or constant."
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            sig = f"def {name}({args_str(node.args)})" + (f" -> {ast.unparse(node.returns)}" if node.returns else "")
            return (
                f'<section class="api-item" id="{esc(name)}"><h3><code>{esc(sig)}</code></h3>'
                + docstring_html(ast.get_docstring(node) or "")
                + params_html(node, lines)
                + "</section>"
            )
        if isinstance(node, ast.ClassDef):
            deco = "".join(f"@{ast.unparse(d)}<br>" for d in node.decorator_list)
            bases = ", ".join(ast.unparse(b) for b in node.bases)
            head = f"{deco}class {esc(name)}" + (f"({esc(bases)})" if bases else "")
            out = [f'<section class="api-item" id="{esc(name)}"><h3><code>{head}</code></h3>']
            out.append(docstring_html(ast.get_docstring(node) or ""))
            fields = [
                (ast.unparse(s.target), ast.unparse(s.annotation), ast.unparse(s.value) if s.value else None, s.lineno)
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            ]
            if fields:
                rows = "".join(
                    f"<tr><td><code>{esc(n)}</code></td><td><code>{esc(a)}</code></td>"
                    f"<td><code>{esc(v) if v is not None else ''}</code></td><td>{inline(comment_at(lines, ln))}</td></tr>"
                    for n, a, v, ln in fields
                )
                out.append(
                    f'<table class="fields"><tr><th>field</th><th>type</th><th>default</th><th></th></tr>{rows}</table>'
                )
            for s in node.body:
                if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    not s.name.startswith("_") or s.name == "__init__" or s.name == "__call__"
                ):
                    sig = f"{s.name}({args_str(s.args)})" + (f" -> {ast.unparse(s.returns)}" if s.returns else "")
                    d = summary(ast.get_docstring(s) or "")
                    out.append(f'<div class="method"><code>{esc(sig)}</code>{(" — " + inline(d)) if d else ""}</div>')
            out.append("</section>")
            return "".join(out)
        value = ast.unparse(node.value) if getattr(node, "value", None) is not None else ""
        if len(value) > 200:
            value = value[:200] + " …"
        return f'<section class="api-item" id="{esc(name)}"><h3><code>{esc(name)} = {esc(value)}</code></h3></section>'

    # ---- assets -----------------------------------------------------------------------------------------------
    def write_assets(self):
        "The one stylesheet, Pygments' colours, and .nojekyll (a GitHub Pages host serves the files as they are)."
        from pygments.formatters import HtmlFormatter

        (self.out / "assets").mkdir(parents=True, exist_ok=True)
        (self.out / "assets/style.css").write_text(STYLE, encoding="utf-8")
        (self.out / "assets/pygments.css").write_text(HtmlFormatter(style="default").get_style_defs(".highlight"))
        (self.out / ".nojekyll").write_text("")

    def build(self) -> dict:
        "Build the whole site into self.out; returns counts and the seconds it took."
        t0 = time.perf_counter()
        if self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        self.collect()
        self.write_assets()
        self.render_notebooks()
        self.render_index()
        self.render_api()
        return dict(
            notebooks=len(self.pages),
            modules=len(self.modules),
            seconds=round(time.perf_counter() - t0, 1),
            cpu_seconds=round(time.process_time(), 1),
            problems=self.problems,
        )


# ---- small helpers ------------------------------------------------------------------------------------------------
def short_title(p: dict) -> str:
    "Sidebar label: the notebook's number and its title up to the colon ('21 ZeRO')."
    num = re.match(r"^(\d+[a-z]?)_", p["nb"].name)
    head = p["title"].split(":")[0].strip()
    if len(head) > 48:
        head = head[:47].rsplit(" ", 1)[0] + " …"
    return f"{num.group(1)} {head}" if num else head


def esc(s: str) -> str:
    return html.escape(str(s), quote=True)


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def summary(doc: str) -> str:
    "First paragraph of a docstring, on one line."
    return " ".join(doc.strip().split("\n\n")[0].split())


def inline(s: str) -> str:
    "Escape, then `code` -> <code>."
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(s))


def docstring_html(doc: str) -> str:
    "Paragraphs and ``` fenced blocks of a docstring."
    if not doc.strip():
        return ""
    out = []
    for i, chunk in enumerate(re.split(r"```\w*\n?", doc)):
        if i % 2:
            out.append(f"<pre>{esc(chunk.strip())}</pre>")
        else:
            out.extend(f"<p>{inline(p.strip())}</p>" for p in chunk.split("\n\n") if p.strip())
    return "".join(out)


def to_markdown(nb: dict, stem: str, out: Path) -> str:
    "The page's Markdown twin (`<page>.html.md`, what the `Docs:` links name): cells, text outputs, PNGs in <stem>_files/."
    import base64

    parts = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] == "markdown":
            parts.append(c["source"])
            continue
        if c["cell_type"] != "code":
            continue
        if c["source"].strip() and c["echo"]:
            parts.append(f"```python\n{c['source']}\n```")
        for j, o in enumerate(c["outputs"]):
            data = o.get("data", {})
            if o.get("output_type") == "stream":
                parts.append(f"```\n{terminal_text(o['text']).rstrip()}\n```")
            elif o.get("output_type") == "error":
                parts.append("```\n" + terminal_text("\n".join(o.get("traceback", []))) + "\n```")
            elif "image/png" in data:
                rel = f"{stem}_files/output_{i}_{j}.png"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(base64.b64decode(data["image/png"]))
                parts.append(f"![png]({rel})")
            elif "text/markdown" in data:
                parts.append(data["text/markdown"])
            elif "text/plain" in data:
                parts.append(f"```\n{terminal_text(data['text/plain']).rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


def module_all(tree) -> list[str] | None:
    "The names in the module's `__all__`, or None."
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


def args_str(a: ast.arguments) -> str:
    "A signature's parameters as written, defaults included."
    return ast.unparse(a)


def comment_at(lines: list[str], lineno: int) -> str:
    "The `# comment` at the end of source line `lineno` (nbdev docments), or ''."
    line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    m = re.search(r"#\s*(.*)$", line)
    if m is None or line.count('"') % 2 or line.count("'") % 2:
        return ""
    return m.group(1).strip()


def params_html(node, lines: list[str]) -> str:
    "A table of the parameters documented by a trailing comment (nbdev docments), when each sits on its own line."
    a = node.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs] + [p for p in (a.vararg, a.kwarg) if p]
    if len({p.lineno for p in params}) < len(params):
        return ""
    rows = [(p.arg, comment_at(lines, p.lineno)) for p in params if p.arg not in ("self", "cls")]
    rows = [(n, c) for n, c in rows if c]
    if not rows:
        return ""
    body = "".join(f"<tr><td><code>{esc(n)}</code></td><td>{inline(c)}</td></tr>" for n, c in rows)
    return f'<table class="fields">{body}</table>'


STYLE = """
:root { --side: 18rem; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --code: #f6f8fa; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); font: 16px/1.55 system-ui, -apple-system, "Segoe UI", "Noto Sans",
       "Noto Sans CJK SC", sans-serif; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
nav.side { position: fixed; top: 0; bottom: 0; left: 0; width: var(--side); overflow-y: auto; padding: 1rem;
           border-right: 1px solid var(--line); background: #fbfcfd; font-size: 14px; }
nav.side .home { display: block; font-weight: 700; font-size: 20px; margin-bottom: .5rem; }
nav.side summary { font-weight: 600; margin-top: .6rem; cursor: pointer; }
nav.side ul { list-style: none; margin: .2rem 0 0; padding-left: .8rem; }
nav.side li { margin: .15rem 0; }
nav.side a.on { font-weight: 700; color: var(--fg); }
main { margin-left: var(--side); padding: 1.5rem 2.5rem 4rem; max-width: calc(var(--side) + 62rem); }
h1, h2, h3 { line-height: 1.25; } h1 { font-size: 2rem; } h1 code { font-size: inherit; }
.anchor-link { visibility: hidden; margin-left: .3rem; font-size: .8em; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link { visibility: visible; }
blockquote { margin: 0 0 1rem; padding: 0 1rem; color: var(--muted); border-left: .25rem solid var(--line); }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Noto Sans Mono CJK SC", monospace;
            font-size: 13.5px; }
:not(pre) > code { background: var(--code); padding: .1em .3em; border-radius: 4px; }
pre { overflow-x: auto; padding: .7rem .9rem; margin: 0; }
.cell { margin: .8rem 0; }
.cell.code .highlight { background: var(--code); border-radius: 6px; }
.highlight pre { background: transparent; }
.output { margin: .25rem 0 0; }
.output pre { background: #fff; border-left: 3px solid var(--line); padding: .4rem .8rem; white-space: pre-wrap; }
.output.stderr pre { background: #fff8f0; } .output.error pre { background: #fff0f0; border-color: #e5a0a0; }
.output img, .cell.md img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: .6rem 0; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: left; vertical-align: top; }
.dataframe td, .dataframe th { text-align: right; }
footer { margin-top: 3rem; padding-top: 1rem; border-top: 1px solid var(--line); color: var(--muted); font-size: 14px; }
footer .pn { display: flex; justify-content: space-between; gap: 1rem; }
ul.toc { padding-left: 1.2rem; } ul.toc li { margin: .35rem 0; }
.sub { color: var(--muted); font-size: 14px; } .mod { font-size: 13px; }
.meta { color: var(--muted); font-size: 14px; }
.api-item { border-top: 1px solid var(--line); margin-top: 1.2rem; padding-top: .4rem; }
.api-item h3 code { background: none; font-size: 14.5px; white-space: pre-wrap; }
.method { margin: .3rem 0 .3rem 1rem; font-size: 14px; }
@media (max-width: 800px) { nav.side { position: static; width: auto; border: 0; }
                            main { margin-left: 0; padding: 1rem; } }
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="_docs", help="output folder (replaced)")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="the repository")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a notebook links to a missing file")
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    out = Path(a.out).resolve()
    site = Site(root, out)
    res = site.build()
    for p in res["problems"]:
        print(f"WARNING: {p}", file=sys.stderr)
    print(
        f">> docs: {res['notebooks']} notebooks + {res['modules']} API pages in {out} ({res['seconds']} s wall, {res['cpu_seconds']} s CPU); "
        f"serve with: make docs-serve  (http://127.0.0.1:8000)"
    )
    return 1 if a.strict and res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
