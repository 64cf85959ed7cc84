"""`python -m worker.serve`: what `tunedeck serve` runs."""
import sys

from worker.serve.server import main

sys.exit(main())
