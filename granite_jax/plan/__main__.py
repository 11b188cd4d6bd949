import sys

from granite_jax.plan.estimate import main

sys.exit(main(sys.argv[1:]))
