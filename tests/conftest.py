import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# An editable install of another checkout may redirect `import pycnn`; the tests test this checkout's source.
_spec = importlib.util.find_spec("pycnn")
if _spec is None or not (_spec.origin or "").startswith(ROOT + os.sep):
    sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]
