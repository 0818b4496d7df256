"""`python -m conv1d_transpose.cli ...` is `conv1d-transpose ...`."""
from . import main

main()
