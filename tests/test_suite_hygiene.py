"""The test suite leaves the user's state alone."""
import os
import tempfile
from pathlib import Path

from pycnn import dispatch


def test_kernel_choices_measured_by_the_tests_stay_out_of_the_users_cache():
    """Races timed on a machine busy with the tests would steer the user's own runs from ~/.cache/pycnn."""
    path = dispatch.cache_path().resolve()
    assert path.is_relative_to(Path(tempfile.gettempdir()).resolve()), path
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").resolve()
    assert not path.is_relative_to(user_cache), path
