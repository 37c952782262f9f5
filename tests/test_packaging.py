"""The top-level kernels/ folder (installed as pha.kernels) seen from the repository root,
where `python -m pha.train` puts it on sys.path as a top-level `kernels` package: importing
it must not need triton, and transformers' probe for Hugging Face's `kernels` package must
not take it for that package (issue 10: the main command failed with
`Could not import module 'BertModel'` because the probe imported it and it imported triton)."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run first in each child: `import triton` then raises ImportError, as without triton installed.
NO_TRITON = "import sys; sys.modules['triton'] = None\n"


def _run_from_root(code: str) -> None:
    # `python -c` puts the working directory first on sys.path, as `python -m` does.
    result = subprocess.run(
        [sys.executable, "-c", NO_TRITON + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_top_level_kernels_package_imports_without_triton():
    _run_from_root(
        """
        import os
        import kernels, pha.kernels
        assert kernels.__file__ == os.path.join(os.getcwd(), "kernels", "__init__.py"), kernels
        assert not hasattr(kernels, "__version__")  # how a probe tells it from the hub package
        assert "hyper_adapter_forward" in dir(pha.kernels)
        try:
            pha.kernels.hyper_adapter_forward  # a launcher needs triton, on first access only
        except ImportError:
            pass
        else:
            raise AssertionError("the launcher loaded although triton cannot be imported")
        """
    )


def test_transformers_does_not_take_repo_kernels_for_the_hub_package():
    _run_from_root(
        """
        import importlib.util, os
        spec = importlib.util.find_spec("kernels")  # the probe finds this repository's folder
        assert spec.origin == os.path.join(os.getcwd(), "kernels", "__init__.py"), spec
        from transformers.utils.import_utils import is_kernels_available
        assert is_kernels_available() is False
        from transformers import BertModel  # noqa: F401  (what failed in issue 10)
        """
    )
