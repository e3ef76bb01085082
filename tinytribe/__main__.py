import sys

from tinytribe.cli import main

sys.exit(main())
