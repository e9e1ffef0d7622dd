"""danqing's version, in a module of its own so that modules inside the package can name it without importing
the package's ``__init__`` (which imports ``pipeline``, and so most of danqing, when ``danqing.load`` runs)."""
__version__ = "0.1.0"
