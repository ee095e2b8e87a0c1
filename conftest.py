"""Collection rules for the doctest run over minidae/: minidae.speed.cuda imports CuPy, so its module
is collected only where CuPy is installed (tests/test_cuda.py covers it on a GPU)."""
import importlib.util

collect_ignore = [] if importlib.util.find_spec("cupy") else ["minidae/speed/cuda.py"]
