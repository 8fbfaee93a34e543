"""The suite, one folder per area of the package (``tests/lm`` tests ``desic.lm``, ...).

Every folder is a package, so test modules are ``tests.<folder>.test_*`` (basenames may
repeat across folders) and shared fakes come from ``tests.support``, never from another
test module.
"""
