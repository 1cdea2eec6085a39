"""MkDocs hook: the reference pages generated from the code (reflectlm.reference) join the site at
build time, so they are never written by hand and never stale."""

from __future__ import annotations

from mkdocs.structure.files import File


def on_files(files, config):
    from reflectlm.reference import pages

    for rel, text in pages().items():
        old = files.get_file_from_path(rel)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, rel, content=text + "\n"))
    return files
