"""`python -m bench`: run every scenario and print the table (see docs/performance.md)."""
import os
import sys

from .run import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# Every process the bench started is stopped by now. Skip the interpreter's clean-up: the
# rate limiter's MongoDB client closes itself in a finalizer that hangs once its server is gone.
os._exit(code)
