"""MkDocs hooks: the README is the site's home page and CHANGELOG.md its last page.

The pages are written to read well on a Git host too, so their links name files as the
repository holds them (``../README.md#…`` from a page, ``docs/….md`` from the README); the
site knows them as ``index.md`` and ``changelog.md``, and these hooks translate.
"""

import os
import re

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATED = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}


def on_files(files, config):
    for name, source in GENERATED.items():
        with open(os.path.join(ROOT, source), encoding="utf-8") as fh:
            files.append(File.generated(config, name, content=fh.read()))
    return files


def _site_name(match):
    """README.md and CHANGELOG.md as the site knows them."""
    return "](" + {"README": "index", "CHANGELOG": "changelog"}[match.group(1)] + ".md"


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri in GENERATED:  # written for the repository's root
        return re.sub(r"\]\((README|CHANGELOG)\.md", _site_name,
                      re.sub(r"\]\(docs/", "](", markdown))
    return re.sub(r"\]\(\.\./(README|CHANGELOG)\.md", _site_name, markdown)
