"""Labelers: the scripted teacher family (B-Pref presets of one parameterised teacher) and adapters.

See oracles/README.md. Names are imported lazily, so ``python -m oracles.teacher`` and
``python -m oracles.agreement`` run cleanly and ``import oracles`` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "ConfiguredLabeler": "configured", "ScriptedLabeler": "scripted", "make_labeler": "scripted",
    "Teacher": "teacher", "TeacherParams": "teacher", "PRESETS": "teacher", "ENV_DEFAULTS": "teacher",
    "env_defaults": "teacher", "format_spec": "teacher", "parse_teacher": "teacher", "teacher_for_env": "teacher",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'oracles' has no attribute {name!r}")
