import sys

from ensemw2s.cli import main

sys.exit(main())
