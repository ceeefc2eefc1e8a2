"""Every model family, registered by importing its module. A new family is one module here."""

from cbi_assets.models import neural, references, statistical, trees  # noqa: F401
