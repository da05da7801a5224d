import sys

from chute.cli import main

sys.exit(main())
