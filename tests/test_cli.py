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


def test_demo_checks_the_rtl_bit_exact(tmp_path):
    result = run("demo", "-o", str(tmp_path / "lenet.stp"), "--rtl-images", "3")
    assert result.returncode == 0, result.stderr
    assert "bit-exact:             3/3 images, every layer" in result.stdout
    assert "int8 golden accuracy:  0.9944" in result.stdout
