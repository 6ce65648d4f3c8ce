"""One exception tree for mrlkit: catch ``MrlkitError`` to catch them all.

Every message says what was wrong and what is allowed, e.g.
``expected 384 dimensions, not 256``.
"""

from __future__ import annotations


class MrlkitError(Exception):
    """Base class of every error mrlkit raises on purpose."""


# --- registry and validation -------------------------------------------------
class CatalogError(MrlkitError):
    """A catalog file (built-in or user) is malformed; the message names file and field."""


class UnknownModelError(MrlkitError, KeyError):
    """The model name is not in the catalog."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DimensionError(MrlkitError, ValueError):
    """A dimension is not allowed for this model or does not match the data."""


class NotMatryoshkaError(DimensionError):
    """Truncation was asked of a model that was not Matryoshka-trained."""


class InvalidVectorError(MrlkitError, ValueError):
    """Vectors hold NaN/inf, have the wrong shape, or a precision is unknown."""


class InvalidInputError(MrlkitError, ValueError):
    """Bad user input: empty text list, duplicate ids, unreadable input file..."""


# --- providers ---------------------------------------------------------------
class ProviderError(MrlkitError):
    """An embedding provider failed."""


class ProviderConnectionError(ProviderError):
    """The provider's server could not be reached."""


class AuthenticationError(ProviderError):
    """The server refused the credentials (HTTP 401/403)."""


class ModelNotFoundError(ProviderError):
    """The server does not know the model (HTTP 404)."""


class BadRequestError(ProviderError):
    """The server refused the request as malformed (HTTP 400/422)."""


class RateLimitError(ProviderError):
    """Still rate-limited (HTTP 429) after every retry."""


class ServerError(ProviderError):
    """The server kept failing (HTTP 5xx) after every retry."""


class BadResponseError(ProviderError):
    """The server answered with something that is not the documented format."""


# --- stores ------------------------------------------------------------------
class StoreError(MrlkitError):
    """A store could not carry out an operation."""


class SetNotFoundError(StoreError, KeyError):
    """No embedding set has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SetExistsError(StoreError):
    """An embedding set with this name exists already."""


class ReembedRequiredError(StoreError):
    """The change asked for needs the texts embedded again (e.g. a larger dimension)."""
