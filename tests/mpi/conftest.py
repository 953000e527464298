"""MPI tests. ``test_collective.py`` runs under a launcher, once per rank::

    mpiexec -n 2 python -m pytest tests/mpi      # and -n 3

(a plain ``pytest`` run does not collect it). ``test_launch.py`` runs in a
plain ``pytest`` and starts ``mpiexec`` itself. Without mpi4py both skip,
unless ``NUMBANET_REQUIRE_MPI`` is set (CI sets it): then they fail.
"""

import os
import shutil
import sys

import pytest

LAUNCHED = any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"))
collect_ignore = ["test_launch.py"] if LAUNCHED else ["test_collective.py"]


def _missing(what):
    if os.environ.get("NUMBANET_REQUIRE_MPI"):
        pytest.fail(f"NUMBANET_REQUIRE_MPI is set but {what}")
    pytest.skip(what)


@pytest.fixture(scope="session")
def mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        _missing("mpi4py is not installed (pip install 'numbanet[dist]')")
    return MPI


@pytest.fixture(scope="session")
def mpiexec():
    """The mpiexec of the environment's MPI (the mpich wheel's, beside python)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        _missing("mpi4py is not installed (pip install 'numbanet[dist]')")
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    exe = shutil.which("mpiexec", path=path)
    if exe is None:
        _missing("no mpiexec on PATH")
    return exe


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # CI sets NUMBANET_REQUIRE_MPI: there an MPI test that skips, for any
    # reason (no mpi4py, no mpiexec, a launcher that left each rank alone in a
    # world of one), fails instead.
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("NUMBANET_REQUIRE_MPI"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but NUMBANET_REQUIRE_MPI is set: {report.longrepr}"
