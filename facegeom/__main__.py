"""``python -m facegeom``: the same command line as the ``facegeom`` script (facegeom/cli.py)."""
import sys

from facegeom.cli import main

if __name__ == "__main__":
    sys.exit(main())
