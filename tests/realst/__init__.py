"""Real SillyTavern in the test suite: installed from the npm registry, run on loopback, driven in Chromium.

ST is the ground truth for everything the extension, the server plugin and the doctor assume about it, so
these tests run the released code of each supported version (``versions.ST_VERSIONS``) rather than a
stand-in. See ``fixtures.py`` for the pytest fixtures and README.md (Testing) for what runs where.
"""
