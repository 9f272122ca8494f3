"""The command line, run as a user would."""

import subprocess
import sys

import striate


def run(*args):
    return subprocess.run([sys.executable, "-m", "striate.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_compile_writes_a_loadable_program(tmp_path):
    out = tmp_path / "lenet.stp"
    result = run("compile", "lenet-digits", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "features.0" in result.stdout
    assert len(striate.load_program(out).layers) == 4


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = run("compile", "resnet", "-o", str(tmp_path / "x.stp"))
    assert result.returncode == 2
    assert result.stderr == ("striate: error: model name must be one of ['lenet-digits'], "
                             "not 'resnet'\n")
