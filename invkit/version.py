"""invkit's version: a leaf module, so that any layer can name it without importing the
package's public face."""

from importlib import metadata

try:
    __version__ = metadata.version("invkit")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
