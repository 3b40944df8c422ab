"""The query service: the read model of notes, projected from every event and served over gRPC."""
