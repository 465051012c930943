"""The package check each notebook runs first: Kaggle's versions are not our pins."""

from __future__ import annotations

import pytest

from guie_nb.environment import SUPPORTED, UnsupportedEnvironment, check_environment


def test_the_pinned_stack_is_supported():
    found = check_environment(required=tuple(SUPPORTED), log=lambda *_: None)
    assert all(found.values())


def test_out_of_range_and_missing_packages_are_named():
    printed = []
    with pytest.raises(UnsupportedEnvironment) as err:
        check_environment(required=("jax",), versions={"keras": "2.15.0", "jax": None, "tensorflow": "2.21.0",
                                                      "keras-hub": "0.32.0", "optax": "0.2.8",
                                                      "orbax-checkpoint": "0.12.8"}, log=printed.append)
    msg = str(err.value)
    assert "keras 2.15.0 is outside the supported range >=3.8,<4" in msg and "jax is not installed" in msg
    assert "tensorflow" not in msg.split(". Pin")[0]
    assert printed == ["packages: keras 2.15.0, jax -, tensorflow 2.21.0, keras-hub 0.32.0, optax 0.2.8, "
                       "orbax-checkpoint 0.12.8"]
    # a package the notebook does not need may be absent
    check_environment(required=(), versions={"keras": "3.15.1", "jax": None, "tensorflow": None, "keras-hub": None,
                                             "optax": None, "orbax-checkpoint": None}, log=lambda *_: None)
    with pytest.raises(UnsupportedEnvironment, match="orbax-checkpoint 0.6.4 is outside the supported range"):
        check_environment(required=(), versions={"orbax-checkpoint": "0.6.4"}, log=lambda *_: None)
