"""The allocator setting, measured by what it is for: page faults per training step, counted
by the kernel in fresh processes (a count, not a timing)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from threadpoolctl import threadpool_limits
    from numpycnn.allocator import keep_freed_blocks
    from numpycnn.engine import reference_network

    applied = keep_freed_blocks() if sys.argv[1] == "keep" else None
    rng = np.random.default_rng(0)
    # a data set as large as a real one's arrays (over glibc's 32 MiB ceiling, as MNIST's
    # are), made without smaller temporaries, whose freeing would tune malloc by chance
    x = rng.standard_normal((12000, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 12000)
    model = reference_network()
    with threadpool_limits(1):
        for step in range(60):
            if step == 10:  # after the warm-up
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            idx = rng.integers(0, 12000, 16)
            model.loss_on(x[idx], y[idx])
            model.backward()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"applied": applied, "faults_per_step": faults / 50}))
    """
)


def faults_per_step(mode):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(
    not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"
)
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default = faults_per_step("default")
    kept = faults_per_step("keep")
    assert kept["applied"] is True
    # glibc's defaults map and unmap each large temporary: hundreds of faults a step
    assert default["faults_per_step"] > 100, default
    assert kept["faults_per_step"] < default["faults_per_step"] / 20, (kept, default)


def test_it_is_applied_once_and_says_so():
    from numpycnn import allocator

    first = allocator.keep_freed_blocks()
    assert allocator.keep_freed_blocks() is first
    assert first is (hasattr(os, "confstr") and bool(os.confstr("CS_GNU_LIBC_VERSION")))


def test_elsewhere_than_glibc_it_does_nothing(monkeypatch):
    from numpycnn import allocator

    monkeypatch.setattr(allocator, "_glibc", lambda: False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("C library opened"))
    assert allocator.keep_freed_blocks.__wrapped__() is False
