"""A pytest plugin (-p wkube_shim) that lets the installed client find the
e2e base modules wkube provides (shim/), without writing into the installed package."""

import os

import kubernetes
import kubernetes.aio

_SHIM = os.path.join(os.path.dirname(__file__), "shim", "kubernetes")
kubernetes.__path__.append(_SHIM)
kubernetes.aio.__path__.append(os.path.join(_SHIM, "aio"))
