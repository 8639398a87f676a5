import sys

from stomper.cli import main

sys.exit(main())
