"""House rules that a machine can check."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_modules_stay_readable():
    """Library files stay under ~400 lines (a little slack): past that, split by responsibility."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "danqing").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"split these files: {long}"


def test_studio_scripts_stay_readable():
    """The studio page's JavaScript keeps the same limit: it is native ES modules, so split it into more of them."""
    scripts = list((ROOT / "danqing" / "studio" / "static").rglob("*.js"))
    assert scripts, "no JavaScript in danqing/studio/static"
    long = {str(p.relative_to(ROOT)): n for p in scripts if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"split these files: {long}"


def test_no_torchvision_dependency():
    """torchvision's PyPI build needs CUDA torch and breaks imports on CPU installs."""
    for name in ("pyproject.toml", "constraints.txt"):
        assert "torchvision" not in (ROOT / name).read_text()
    for p in (ROOT / "danqing").rglob("*.py"):
        assert "import torchvision" not in p.read_text(), p


def test_torch_is_pinned():
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in lines
