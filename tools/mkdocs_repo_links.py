"""MkDocs hook: relative links from the documentation to files of the repository outside ``docs/``.

A page links ``../benchmarks/results/hybrid.md`` so that the link works wherever the Markdown is read
(GitHub, an editor). MkDocs only knows the files under ``docs/`` and would report such a link as not
found. This hook checks that every such target exists in the repository (a missing one is a warning,
so ``mkdocs build --strict`` fails on it), copies it into the site under ``repo/`` (Markdown files
become pages, other files are copied as they are) and rewrites the link to the copy. Links inside the
copied pages are followed the same way; those that point back into ``docs/`` go to the page.

It also renders the Sphinx roles of the docstrings (``:class:`~automl_bilevel.Run```), which
mkdocstrings' Markdown leaves as text, as cross-references to the API reference where the object is
documented there, else as code.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mkdocs.structure.files import File, Files, InclusionLevel

log = logging.getLogger("mkdocs.hooks.repo_links")

PREFIX = "repo"  # where copies of repository files live in the site
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|exc|obj|const):<code>(~?)([\w.]+)(\(\))?</code>")
FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[^\n]*$", re.M | re.S)


def _root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def _docs(config: Any) -> Path:
    return Path(config.docs_dir).resolve()


def _source(config: Any, src_uri: str) -> Path:
    """Where a page's Markdown lives in the repository."""
    if src_uri.startswith(PREFIX + "/"):
        return _root(config) / src_uri[len(PREFIX) + 1 :]
    return _docs(config) / src_uri


def _prose_parts(markdown: str) -> Iterator[tuple[bool, str]]:
    """The Markdown cut into (is_prose, text) pieces; fenced code is not prose."""
    pos = 0
    for m in FENCE.finditer(markdown):
        yield True, markdown[pos : m.start()]
        yield False, m.group(0)
        pos = m.end()
    yield True, markdown[pos:]


def _relative_links(markdown: str) -> Iterator[str]:
    for prose, text in _prose_parts(markdown):
        if prose:
            for m in LINK.finditer(text):
                url = urlsplit(m.group(2))
                if not (url.scheme or url.netloc or m.group(2).startswith(("#", "/"))):
                    yield m.group(2)


def _target(config: Any, src_uri: str, link: str) -> Path:
    path = urlsplit(link).path
    return (_source(config, src_uri).parent / path).resolve()


def _in(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _repo_file(config: Any, target: Path) -> Path | None:
    """The repository file a link outside docs/ stands for (a folder stands for its README.md)."""
    if target.is_dir():
        target = target / "README.md"
    return target if target.is_file() else None


def on_files(files: Files, *, config: Any) -> Files:
    """Add the repository files that pages link to (and, for Markdown, what those link to)."""
    root, docs = _root(config), _docs(config)
    todo = [(f.src_uri, f.content_string) for f in files if f.is_documentation_page()]
    added: set[Path] = set()
    while todo:
        src_uri, text = todo.pop()
        for link in _relative_links(text):
            target = _target(config, src_uri, link)
            if _in(target, docs) or not _in(target, root):
                continue
            found = _repo_file(config, target)
            if found is None or found in added:
                continue
            added.add(found)
            uri = f"{PREFIX}/{found.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(found), inclusion=InclusionLevel.NOT_IN_NAV))
            if found.suffix == ".md":
                todo.append((uri, found.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Files) -> str:
    """Point links to repository files at their copies, and check that they exist."""
    root, docs = _root(config), _docs(config)
    src_uri = page.file.src_uri
    here = posixpath.dirname(src_uri)

    def rewrite(m: re.Match[str]) -> str:
        link = m.group(2)
        url = urlsplit(link)
        if url.scheme or url.netloc or link.startswith(("#", "/")):
            return m.group(0)
        target = _target(config, src_uri, link)
        anchor = f"#{url.fragment}" if url.fragment else ""
        if _in(target, docs):
            if not src_uri.startswith(PREFIX + "/"):
                return m.group(0)  # a page linking a page: MkDocs checks it
            new = posixpath.relpath(target.relative_to(docs).as_posix(), here or ".")
        elif not _in(target, root):
            log.warning("%s links %s, outside the repository", src_uri, link)
            return m.group(0)
        else:
            found = _repo_file(config, target)
            if found is None:
                log.warning("%s links %s, which does not exist in the repository", src_uri, link)
                return m.group(0)
            new = posixpath.relpath(f"{PREFIX}/{found.relative_to(root).as_posix()}", here or ".")
        return f"{m.group(1)}{new}{anchor}{m.group(3)}"

    return "".join(LINK.sub(rewrite, text) if prose else text for prose, text in _prose_parts(markdown))


def on_page_content(html: str, *, page: Any, config: Any, files: Files) -> str:
    """Sphinx roles left in rendered docstrings become (optional) cross-references, resolved by autorefs."""

    def link(m: re.Match[str]) -> str:
        short, identifier, call = m.group(1) == "~", m.group(2), m.group(3) or ""
        title = identifier.rsplit(".", 1)[-1] if short else identifier
        return f'<autoref identifier="{identifier}" optional><code>{title}{call}</code></autoref>'

    return ROLE.sub(link, html)
