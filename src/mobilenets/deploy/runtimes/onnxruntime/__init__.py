"""onnxruntime: its CPU session (``session``), the passes for x86 that run before it
(``rewrite``: squeeze-excite layout, hard-sigmoid lookup; ``channel_pad``; ``qdq_complete``)
and its profiler (``profile``)."""

from .profile import format_profile
from .profile import profile_onnx as profile
from .session import open_session, session_options

__all__ = ["format_profile", "open_session", "profile", "session_options"]
