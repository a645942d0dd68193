"""Choose MuJoCo's headless OpenGL backend before ``mujoco`` is first imported.

MuJoCo reads ``MUJOCO_GL`` once, when it is imported, and PyOpenGL reads
``PYOPENGL_PLATFORM`` the same way, so both are set together here. EGL is preferred
because it is much faster than OSMesa's software rasteriser; OSMesa is the fallback.
A value the user has already set is kept.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install EGL or OSMesa, e.g. `apt-get install libegl1 libgl1 libosmesa6`, "
    "or set MUJOCO_GL to a working backend"
)

_state = {"backend": None, "warned": False}


PROBE_SCRIPT = "import mujoco; context = mujoco.GLContext(8, 8); context.make_current(); context.free()"
PROBE_TIMEOUT_S = 60


def _backend_works(backend: str) -> bool:
    """Return whether MuJoCo can create an offscreen context with this backend.

    The probe runs in a child process because a backend cannot be switched once MuJoCo is
    imported. Worker processes inherit the chosen ``MUJOCO_GL`` and skip the probe.
    """
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        result = subprocess.run(
            [sys.executable, "-c", PROBE_SCRIPT],
            env=env,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        logger.warning("probing the %s OpenGL backend timed out after %d s", backend, PROBE_TIMEOUT_S)
        return False
    return result.returncode == 0


def configure_gl_backend() -> str | None:
    """Set ``MUJOCO_GL`` and ``PYOPENGL_PLATFORM``; return the backend, or None if none works.

    Call this before ``import mujoco``. The result is cached for the process.
    """
    if _state["backend"] is not None:
        return _state["backend"]
    backend = os.environ.get("MUJOCO_GL")
    if not backend and "mujoco" in sys.modules:
        _state["imported_too_early"] = True
        return None
    if not backend:
        if _backend_works("egl"):
            backend = "egl"
        elif _backend_works("osmesa"):
            backend = "osmesa"
            logger.warning("EGL is not available; rendering falls back to the slower OSMesa")
        else:
            return None
        os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    _state["backend"] = backend
    return backend


def require_gl_backend() -> str:
    """Return the configured backend, or raise a clear error when no backend works."""
    backend = configure_gl_backend()
    if _state.get("imported_too_early"):
        raise RuntimeError(
            "mujoco was imported before vla_distill.sim, so it could not be given a headless "
            "OpenGL backend; import vla_distill.sim first or set MUJOCO_GL=egl (or osmesa)"
        )
    if backend is None:
        raise RuntimeError(f"no headless OpenGL backend works on this machine: {INSTALL_HINT}")
    return backend
