"""`python -m tests.fake_kbindex ARGS`: the kbindex CLI with the fake embedder registered.

Subprocess tests (crash, concurrent writers) run this so that they need no model.
"""

from kbindex.cli import main
from tests import fakes

fakes.register()

if __name__ == "__main__":
    main()
