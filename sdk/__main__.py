import sys

from pixelroute.cli import main

sys.exit(main())
