"""Simulated suites of vla-distill, registered as Gymnasium environments.

Importing this package selects the headless OpenGL backend for MuJoCo (see ``gl.py``)
and registers every environment id under the ``vla_distill/`` namespace.
"""

from vla_distill.sim.gl import configure_gl_backend

configure_gl_backend()

from vla_distill.sim.registration import ENV_ID, SUITES, register_envs, suite_tasks  # noqa: E402

register_envs()

__all__ = ["ENV_ID", "SUITES", "register_envs", "suite_tasks"]
