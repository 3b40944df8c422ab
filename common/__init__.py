"""Code shared by every Scribe service: settings, logging, database, events, gRPC bootstrap, blobs.

Services import from here and from the generated contracts in ``scribe``; never from each other.
"""
