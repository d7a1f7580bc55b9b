"""Operator-written page text: templates under SITE_TEMPLATES_DIR/site/ replace the built-in ones."""
from __future__ import annotations

import os

from jinja2 import ChoiceLoader, FileSystemLoader, TemplateNotFound

# Only these pages' text is the operator's to change; payment and account pages carry
# behaviour a replacement could break.
OVERRIDABLE_PREFIX = "site/"


class _SitePagesOnly(FileSystemLoader):
    def get_source(self, environment, template):
        if not template.startswith(OVERRIDABLE_PREFIX):
            raise TemplateNotFound(template)
        return super().get_source(environment, template)

    def list_templates(self):
        return [name for name in super().list_templates() if name.startswith(OVERRIDABLE_PREFIX)]


def with_operator_templates(app, folder: str) -> None:
    """Look in the operator's folder first; a folder that does not exist changes nothing."""
    if not folder:
        return
    app.jinja_loader = ChoiceLoader([_SitePagesOnly(os.path.abspath(folder)), app.jinja_loader])
