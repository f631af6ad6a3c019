import sys

from embq.cli import main

sys.exit(main())
