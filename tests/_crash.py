"""For the crash tests: Python source that makes a child process die (``os._exit(17)``, with no cleanup, as a
SIGKILL would) at its ``crash_at``-th file-system step. The child sets ``crash_at`` before running it."""
import textwrap

CRASH_AT_EVERY_STEP = textwrap.dedent("""
    import os, shutil
    steps = 0

    def crashing(fn):
        def step(*args, **kwargs):
            global steps
            if steps == crash_at:
                os._exit(17)
            steps += 1
            return fn(*args, **kwargs)
        return step

    for name in ("replace", "rename", "fsync", "unlink", "rmdir", "mkdir", "link"):
        setattr(os, name, crashing(getattr(os, name)))
    shutil.rmtree = crashing(shutil.rmtree)
""")
