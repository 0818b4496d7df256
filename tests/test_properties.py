"""Runs the property campaign in a child process with a time limit: a crash or a hang of
the library fails this test with the child's output instead of killing the test run."""
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


def run_campaign(profile, timeout):
    environment = dict(os.environ, HYPOTHESIS_PROFILE=profile)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--hypothesis-show-statistics", str(HERE / "property_campaign.py")],
        cwd=HERE.parent, env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_property_campaign_ci_profile():
    """2,000 derandomised examples over the whole argument space (CI)."""
    output = run_campaign("ci", timeout=1200)
    assert "2000 passing" in output, output[-3000:]
