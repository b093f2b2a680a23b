"""The tests' shared builders, from the test kit (`qwenvl_testkit.helpers`) that every package's tests use."""

from qwenvl_testkit.helpers import EAGER, EAGER_SERVER_ARGS, ENGINE_ARGS, RecordingEngine, make_image, png_bytes

__all__ = ["EAGER", "EAGER_SERVER_ARGS", "ENGINE_ARGS", "RecordingEngine", "make_image", "png_bytes"]
