"""Methods, by registry name. Importing this package registers every method."""

from sketchshot.methods import pairwise, supervised  # noqa: F401  (registration)
from sketchshot.methods.base import METHODS, Method, create_method, prototypes
from sketchshot.methods.fewshot import matching, protonet, relation, siamese  # noqa: F401
from sketchshot.methods.ssl import byol, simclr  # noqa: F401  (registration)

__all__ = ["METHODS", "Method", "create_method", "prototypes"]
