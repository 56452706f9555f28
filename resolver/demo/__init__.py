"""Local stand-ins for Twilio and a media store, for `resolver demo` and the test suite.

Nothing here is imported by the service itself: these servers only ever bind to 127.0.0.1 and are started
explicitly by the demo command or by test fixtures.
"""
