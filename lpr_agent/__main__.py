import sys

from lpr_agent.cli import main

sys.exit(main())
