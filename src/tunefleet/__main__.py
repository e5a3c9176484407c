import sys

from tunefleet.platform.cli import main

sys.exit(main())
